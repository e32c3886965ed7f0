"""Where env runners go on a compose cluster, and which run `--resume-interrupted` continues: no Docker, no Ray."""

import json
import subprocess
import sys

import pytest

from procgen_rl.config import load_experiment
from procgen_rl.errors import ConfigError
from procgen_rl.launchers.compose import cluster_slots
from procgen_rl.run_dir import STATE_FILE, STOPPED_FILE, RunDir, interrupted_run

RUNNERS = "resources.num_env_runners"


def experiment(**overrides):
    return load_experiment("experiments/smoke.yaml", overrides)


def test_without_workers_the_head_holds_the_runners():
    exp = experiment(**{"resources.num_env_runners": 2})
    assert cluster_slots(exp, workers=0, overrides={RUNNERS: 2}) == (2, 0)
    assert cluster_slots(experiment(), workers=0, overrides={}) == (1, 0)


def test_one_runner_per_worker_unless_set():
    exp = experiment()
    assert cluster_slots(exp, workers=4, overrides={}) == (0, 1)
    assert exp.resources.num_env_runners == 4 and exp.resources.spread_env_runners


def test_workers_that_cannot_split_the_envs_fail_naming_workers():
    with pytest.raises(
        ConfigError, match=r"^--workers 3 \(one env runner each\): 3 runners cannot split algorithm.num_envs=8"
    ):
        cluster_slots(experiment(), workers=3, overrides={})


def test_more_runners_than_workers_get_enough_slots():
    exp = experiment(**{"resources.num_env_runners": 4})
    assert cluster_slots(exp, workers=3, overrides={RUNNERS: 4}) == (0, 2)
    assert exp.resources.num_env_runners == 4


def make_run(root, name, checkpoint=True, stopped=False):
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    if checkpoint:
        (run.checkpoints_path / "checkpoint_000001").mkdir(parents=True)
        (run.checkpoints_path / "checkpoint_000001" / STATE_FILE).write_text("{}")
    if stopped:
        (run.path / STOPPED_FILE).write_text(json.dumps({"stop_reason": "signal"}))
    return run


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    return tmp_path


def test_the_newest_run_is_continued_only_when_interrupted(results):
    make_run(results, "smoke-20261125-100000")
    newest = make_run(results, "smoke-20261125-110000")
    assert interrupted_run("smoke").path == newest.path
    (newest.path / STOPPED_FILE).write_text("{}")
    assert interrupted_run("smoke") is None  # the newest stopped cleanly: a new run, not an older one


def test_runs_without_checkpoints_and_other_experiments_are_not_continued(results):
    make_run(results, "smoke-20261125-100000", checkpoint=False)
    assert interrupted_run("smoke") is None
    make_run(results, "ppo-8m-20261125-100000")
    assert interrupted_run("ppo") is None  # a prefix of another experiment's name


def test_a_run_being_trained_is_not_continued(results):
    run = make_run(results, "smoke-20261125-100000")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\n"
            "from procgen_rl.run_dir import RunDir\n"
            "with RunDir(Path(sys.argv[1])).lock():\n print('locked', flush=True); time.sleep(60)",
            str(run.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert interrupted_run("smoke") is None
        with pytest.raises(Exception, match="being trained by another process"):
            with run.lock():
                pass
    finally:
        holder.kill()
    holder.wait()
    assert interrupted_run("smoke").path == run.path
