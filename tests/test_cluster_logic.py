"""Where env runners go on a compose cluster, and which run `--resume-interrupted` continues: no Docker, no Ray."""

import json
import subprocess
import sys

import pytest

from procgen_rl.config import read_experiment
from procgen_rl.errors import ConfigError, UserError
from procgen_rl.launchers import Job, LaunchOptions
from procgen_rl.launchers.compose import cluster_slots, place, worker_cpus
from procgen_rl.layout import usable_cpus
from procgen_rl.run_dir import STATE_FILE, STOPPED_FILE, RunDir, interrupted_run

RUNNERS = "resources.num_env_runners"


def job(**overrides):
    experiment, explicit = read_experiment("experiments/smoke.yaml", overrides)
    return Job(experiment, "experiments/smoke.yaml", overrides, explicit, run=None)


def test_without_workers_the_head_holds_the_runners():
    two = job(**{RUNNERS: 2})
    assert cluster_slots(place(two, LaunchOptions(workers=0)), workers=0) == (2, 0)
    assert two.experiment.resources.num_env_runners == 2 and not two.experiment.resources.spread_env_runners


def test_each_worker_gets_runners_for_its_cpu_limit_unless_set():
    one_cpu = job()
    layout = place(one_cpu, LaunchOptions(workers=4, worker_cpus=1))
    assert cluster_slots(layout, workers=4) == (0, 1)  # 8 envs: 4 runners of 2, one per worker
    resources = one_cpu.experiment.resources
    assert (resources.num_env_runners, resources.num_cpus_per_env_runner, resources.spread_env_runners) == (4, 1, True)
    two_cpus = job(**{"algorithm.num_envs": 16})
    layout = place(two_cpus, LaunchOptions(workers=2, worker_cpus=2.5))
    assert cluster_slots(layout, workers=2) == (0, 2)  # 2.5 CPUs hold 2 runners of 1 CPU
    assert [spec.cpus for spec in layout.samplers] == [2, 2] and layout.envs_per_env_runner == 4


def test_workers_share_this_machines_cpus_unless_told():
    assert worker_cpus(2, None) == round(usable_cpus() / 2, 2)
    assert worker_cpus(0, None) == usable_cpus() and worker_cpus(3, 1.5) == 1.5
    with pytest.raises(UserError, match="--worker-cpus must be > 0, got 0"):
        worker_cpus(2, 0)


def test_workers_that_cannot_split_the_envs_fail_naming_workers():
    with pytest.raises(
        ConfigError, match=r"^--workers 3: no env runner count from 3 \(one per host\) to 3 .* algorithm.num_envs=8"
    ):
        place(job(), LaunchOptions(workers=3, worker_cpus=1))


def test_more_runners_than_workers_get_enough_slots():
    four = job(**{RUNNERS: 4})
    assert cluster_slots(place(four, LaunchOptions(workers=3, worker_cpus=2)), workers=3) == (0, 2)
    assert four.experiment.resources.num_env_runners == 4


def test_more_runners_than_the_workers_cpus_hold_fail_before_anything_starts():
    with pytest.raises(ConfigError, match=r"^--workers 2: 2 env runners x 1 CPU need 2 CPUs on ray-worker-1"):
        place(job(**{RUNNERS: 4}), LaunchOptions(workers=2, worker_cpus=1))


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
