"""A real suite through Ray Tune on a local Ray: 2 games x 2 seeds of the smoke experiment, one
cell killed mid-run, the suite rerun, a report rendered from the runs.

Marked slow (a few minutes on 2 cores): the cells train one at a time until the kill, then two
at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import CLI, REPO, run_cli
from procgen_rl.run_dir import STATE_FILE, RunDir

pytestmark = pytest.mark.slow
CELLS = ["coinrun_seed-0", "coinrun_seed-1", "starpilot_seed-0", "starpilot_seed-1"]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The smoke suite, two iterations per cell, run until the second cell has its first
    checkpoint, killed there (SIGKILL to the driver's process group), then rerun."""
    root = tmp_path_factory.mktemp("benchmark")
    suite_file = root / "tiny.yaml"
    suite_file.write_text(
        yaml.safe_dump(
            {
                "experiment": "experiments/smoke.yaml",
                "budget": {"training_iteration": 2},
                "grid": {"env_config.env_name": ["coinrun", "starpilot"], "seed": [0, 1]},
            },
            sort_keys=False,
        )
    )
    directory = root / "suite"
    home = root / "home"  # Ray and Tune write nothing under ~ (~/ray_results stays absent)
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    command = [*CLI, "benchmark", str(suite_file), "--dir", str(directory)]
    log = (root / "first.log").open("w")
    first = subprocess.Popen(
        [*command, "--max-concurrent", "1"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    killed = RunDir(directory / CELLS[1])
    deadline = time.time() + 600
    while not killed.checkpoints() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(60)
    log.close()
    while killed.is_locked() and time.time() < deadline:  # Ray's workers (own process groups) exit once Ray is gone
        time.sleep(0.5)
    assert killed.checkpoints() and not killed.stopped_path.exists(), (root / "first.log").read_text()[-3000:]
    before = {
        "finished": (directory / CELLS[0] / "stopped.json").stat().st_mtime_ns,
        "killed_state": json.loads((killed.latest_checkpoint() / STATE_FILE).read_text()),
    }
    rerun = run_cli("benchmark", str(suite_file), "--dir", str(directory), timeout=900, env={"HOME": str(home)})
    return directory, before, rerun, home


def test_the_rerun_skips_the_finished_cell_and_resumes_the_killed_one(suite):
    directory, before, rerun, home = suite
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    assert "4 cells in" in rerun.stdout and "1 finished, 1 to resume, 2 new" in rerun.stdout
    assert (directory / CELLS[0] / "stopped.json").stat().st_mtime_ns == before["finished"]  # untouched
    state = before["killed_state"]
    killed = directory / CELLS[1]
    assert f"resumed {killed / 'checkpoints'}" in rerun.stdout
    assert f"at iteration {state['iteration']}, {state['timesteps_total']:,} steps" in rerun.stdout
    stopped = json.loads((killed / "stopped.json").read_text())
    assert stopped["iteration"] == 2 and stopped["stop_reason"] == "training_iteration"
    rows = metrics(killed)
    resumed = [row for row in rows if row["iteration"] == state["iteration"] + 1][-1]
    assert resumed["timesteps_total"] > state["timesteps_total"]  # the step count continued
    assert rows[-1]["timesteps_total"] == stopped["timesteps_total"]
    for cell in CELLS:
        assert json.loads((directory / cell / "stopped.json").read_text())["iteration"] == 2
        assert f"  {cell}" in rerun.stdout
    assert "Suite tiny: 4 of 4 cells finished" in rerun.stdout
    assert any((directory / "tune").iterdir())  # Tune's state in the suite directory
    # Tune kept nothing in ~/ray_results; the one empty directory there is the killed trial's RLlib
    # Algorithm's, which the trainer removes when it stops (procgen_rl.trainer) and could not
    left = list((home / "ray_results").glob("*")) if (home / "ray_results").exists() else []
    assert len(left) <= 1 and not any(any(p.iterdir()) for p in left)


def test_a_report_of_the_suite(suite):
    from procgen_rl.procgen import normalized_score
    from procgen_rl.report import read_metrics

    directory, _, _, _ = suite
    result = run_cli("report", str(directory), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((directory / "scores.json").read_text())
    assert scores["runs"] == 4 and scores["games"] == ["coinrun", "starpilot"]
    for row in scores["per_game"]:
        runs = [read_metrics(Path(path) / "metrics.jsonl") for path in row["runs"]]
        assert row["env_steps"] == pytest.approx(sum(r[-1]["timesteps_total"] for r in runs) / 2)
        # The train split is the evaluation's on training levels where a run logged it (the smoke
        # experiment evaluates), else the training episodes'; metrics.jsonl leaves NaN out.
        key = (
            "eval_train_reward_mean"
            if any("eval_train_reward_mean" in x for r in runs for x in r)
            else "episode_reward_mean"
        )
        finals = [[x[key] for x in r if key in x][-1:] for r in runs]
        expected = [normalized_score(f[0], row["game"], "easy") for f in finals if f]
        assert (row["train"] or {}).get("scores", []) == pytest.approx(expected)
    assert (directory / "report.md").is_file()
    assert {p.name for p in directory.glob("curves-*.png")} == {"curves-coinrun.png", "curves-starpilot.png"}


def test_a_cell_the_cluster_cannot_hold_is_one_line(tmp_path):
    suite = tmp_path / "big.yaml"
    resources = {"resources.num_env_runners": 8, "resources.num_cpus_per_env_runner": 64}
    grid = {"seed": [0]}
    suite.write_text(
        json.dumps(
            {
                "experiment": "experiments/smoke.yaml",
                "budget": {"training_iteration": 1},
                "set": resources,
                "grid": grid,
            }
        )
    )
    result = run_cli("benchmark", str(suite), "--dir", str(tmp_path / "d"), timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[-1]] and "cell seed-0 needs 513 CPU (resources.* of its experiment)" in errors[0]
    assert not (tmp_path / "d").exists()  # nothing written: a changed suite may use the directory
