"""Learning runs from their records, across checkouts: benchmarks/learning.py reuses a recorded
lean run (the harness alone trains) and refuses a record of another measurement before anything
runs; benchmarks/plot_learning.py redraws recorded runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import learning
import plot_learning
import records
from conftest import REPO

# Three iterations of 8 envs x 128 steps on starpilot, whose episodes end within each of them.
SMOKE = ["algorithm.num_steps=128", "env_config.env_name=starpilot"]
LEAN = records.measurement("experiments/smoke.yaml", SMOKE, steps=3072, implementation="lean PPO")


def record(path: Path, measurement: object, figures: dict) -> Path:
    path.write_text(json.dumps({"kind": "learning", "measurement": measurement, "figures": figures}))
    return path


def run_learning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """learning.py's main on smoke.yaml for 3,072 steps, its records and figures under tmp_path."""
    monkeypatch.setattr(records, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(learning, "FIGURES", tmp_path / "figures")
    (tmp_path / "figures").mkdir(exist_ok=True)
    monkeypatch.chdir(REPO)
    out = ["--out", str(tmp_path / "out")]
    sets = [arg for item in SMOKE for arg in ("--set", item)]
    monkeypatch.setattr(sys, "argv", ["learning.py", "experiments/smoke.yaml", "--steps", "3072", *sets, *out, *args])
    learning.main()


@pytest.mark.slow
def test_a_recorded_lean_run_is_reused_and_the_harness_record_keeps_its_curve(tmp_path, monkeypatch):
    lean = record(tmp_path / "lean.json", LEAN, {"curve": [[2048, 1.0], [3072, 2.0]]})
    run_learning(tmp_path, monkeypatch, "--lean-record", str(lean))
    assert plot_learning.read_lean_csv(tmp_path / "out" / "lean.csv") == [(2048, 1.0), (3072, 2.0)]
    (harness,) = (tmp_path / "records").iterdir()  # the lean run was not made again, nor recorded
    written = json.loads(harness.read_text())
    assert written["measurement"] == LEAN | {"implementation": "harness"}
    steps = [step for step, _ in written["figures"]["curve"]]
    assert len(steps) == 3 and steps[-1] >= 3072  # a point an iteration; RLlib counts a few steps over
    assert (tmp_path / "out" / "learning.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("measurement", "figures", "fragment"),
    [
        (LEAN | {"steps": 2048}, {"curve": [[2048, 1.0]]}, "'steps': 2048, 'implementation': 'lean PPO'}, not"),
        (LEAN | {"implementation": "harness"}, {"curve": [[1024, 1.0]]}, "'harness'}, not this run's"),
        (LEAN, {"final_return": 1.0}, "not a learning record with a curve"),
        (LEAN, {"curve": []}, "not a learning record with a curve"),
        (["a list"], {"curve": [[1, 1.0]]}, "not a learning record with a curve"),
    ],
)
def test_a_record_of_another_run_is_refused_before_anything_runs(tmp_path, monkeypatch, measurement, figures, fragment):
    bad = record(tmp_path / "lean.json", measurement, figures)
    with pytest.raises(SystemExit) as refused:
        run_learning(tmp_path, monkeypatch, "--lean-record", str(bad))
    line = str(refused.value)
    assert line.startswith("error: ") and f"{bad}: " in line and fragment in line and "\n" not in line
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "records").exists()


def test_a_plot_draws_recorded_runs(tmp_path):
    """plot_learning.py redraws runs from their records alone, with game, seed and algorithm from
    the recorded experiment and overrides."""
    overrides = ["env_config.env_name=starpilot", "seed=1"]
    sources = [
        record(
            tmp_path / f"{implementation}.json",
            records.measurement("experiments/ppg-8m.yaml", overrides, steps=2, implementation=implementation),
            {"curve": [[1, 0.5], [2, ret]]},
        )
        for implementation, ret in (("lean PPG", 1.0), ("harness", 2.0))
    ]
    assert plot_learning.curves_of(sources) == {
        "starpilot": {("lean PPG", 1): [(1, 0.5), (2, 1.0)], ("harness PPG", 1): [(1, 0.5), (2, 2.0)]}
    }


def test_iterations_before_the_first_finished_episode_leave_the_curve(tmp_path):
    (tmp_path / "lean.csv").write_text("step,mean_return\n1024,nan\n2048,1.5\n")
    assert plot_learning.read_lean_csv(tmp_path / "lean.csv") == [(2048, 1.5)]
