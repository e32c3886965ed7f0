"""Benchmark suites without Ray: the format, the cells, a suite directory's rerun plan, bad input.

Runs that "trained" here are written by hand the way the trainer writes them (config.yaml, a
checkpoint's trainer_state.json, stopped.json); tests/test_benchmark.py trains real ones.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, assert_one_line_error, run_cli
from procgen_rl.config import load_experiment
from procgen_rl.errors import UserError
from procgen_rl.run_dir import RLLIB_METADATA, STATE_FILE, RunDir
from procgen_rl.suite import check_directory, load_suite, plan, save

SMOKE = str(REPO / "experiments" / "smoke.yaml")


def write_suite(path: Path, **fields) -> Path:
    suite = {"experiment": SMOKE, "budget": {"timesteps_total": 1024}, "grid": {"seed": [0, 1]}, **fields}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_the_shipped_suites_resolve_every_cell(monkeypatch):
    monkeypatch.chdir(REPO)
    for path in sorted((REPO / "benchmarks" / "suites").glob("*.yaml")):
        suite = load_suite(path.relative_to(REPO))
        cells = plan(suite, Path("/nonexistent/suite-dir"))
        assert {cell.status for cell in cells} == {"new"}
        for cell in cells:
            assert cell.experiment.name == cell.cell.name
            assert cell.experiment.stop.timesteps_total == suite.budget["timesteps_total"]
    easy = load_suite("benchmarks/suites/procgen-easy-8m.yaml")
    cells = plan(easy, Path("/nonexistent/suite-dir"))
    assert len(cells) == 16 * 3
    assert {(c.experiment.env_config.distribution_mode, c.experiment.env_config.num_levels) for c in cells} == {
        ("easy", 200)
    }
    assert {c.experiment.stop.timesteps_total for c in cells} == {8_000_000}


def test_cells_are_named_after_their_axis_values(tmp_path):
    grid = {"env_config.env_name": ["coinrun", "starpilot"], "algorithm.name": ["PPO", "APPO"], "seed": [0, 1]}
    suite = load_suite(write_suite(tmp_path / "s.yaml", grid=grid, set={"env_config.num_levels": 100}))
    names = [cell.name for cell in suite.cells()]
    assert len(names) == 8 and names[:3] == [
        "coinrun_name-PPO_seed-0",
        "coinrun_name-PPO_seed-1",
        "coinrun_name-APPO_seed-0",
    ]
    cell = suite.cells()[2]
    assert suite.overrides(cell) == {
        "env_config.num_levels": 100,
        "env_config.env_name": "coinrun",
        "algorithm.name": "APPO",
        "seed": 0,
        "stop.timesteps_total": 1024,
        "stop.time_total_s": 0.0,
        "stop.training_iteration": 0,
        "name": "coinrun_name-APPO_seed-0",
    }


def test_budget_values_are_typed_like_set_values(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", budget={"timesteps_total": "8e6"}))
    assert suite.budget == {"timesteps_total": 8_000_000, "time_total_s": 0.0, "training_iteration": 0}


def trained(run: RunDir, experiment, iteration: int, steps: int, stop_reason: str | None) -> None:
    """A run directory as the trainer leaves it: its config, a checkpoint, a clean stop or none."""
    run.write_config(experiment)
    checkpoint = run.checkpoints_path / f"checkpoint_{iteration:06d}"
    checkpoint.mkdir(parents=True)
    state = {
        "iteration": iteration,
        "timesteps_total": steps,
        "timesteps_trained": steps,
        "time_total_s": 10.0 * iteration,
        "episodes_total": 3,
    }
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    (checkpoint / RLLIB_METADATA).write_text("{}")
    if stop_reason:
        run.stopped_path.write_text(json.dumps({"stop_reason": stop_reason, "checkpoint": str(checkpoint), **state}))


def test_a_rerun_skips_finished_cells_and_resumes_interrupted_ones(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", grid={"seed": [0, 1, 2, 3]}))
    directory = tmp_path / "suite"
    save(suite, directory)
    cells = {cell.cell.name: cell for cell in plan(suite, directory)}
    trained(cells["seed-0"].run, cells["seed-0"].experiment, 2, 1038, "timesteps_total")  # finished
    trained(cells["seed-1"].run, cells["seed-1"].experiment, 1, 519, None)  # killed after its first checkpoint
    trained(cells["seed-2"].run, cells["seed-2"].experiment, 1, 519, "signal")  # stopped by Ctrl-C
    statuses = {cell.cell.name: cell.status for cell in plan(suite, directory)}
    assert statuses == {"seed-0": "finished", "seed-1": "resume", "seed-2": "resume", "seed-3": "new"}

    longer = load_suite(write_suite(tmp_path / "s.yaml", grid={"seed": [0, 1, 2, 3]}, budget={"timesteps_total": 2048}))
    assert "budget changed" in check_directory(longer, directory)
    cells = plan(longer, directory)
    assert cells[0].status == "resume"  # a larger budget continues finished cells
    assert cells[0].experiment.stop.timesteps_total == 2048  # the saved config, the new budget


def test_a_cell_keeps_the_config_it_trained_with(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml"))
    directory = tmp_path / "suite"
    cell = plan(suite, directory)[0]
    experiment = load_experiment(SMOKE, {**suite.overrides(cell.cell), "algorithm.learning_rate": 1e-4})
    trained(cell.run, experiment, 1, 519, None)
    assert plan(suite, directory)[0].experiment.algorithm.learning_rate == 1e-4


def test_a_cell_being_trained_is_refused(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml"))
    cell = plan(suite, tmp_path / "suite")[0]
    with cell.run.lock(), pytest.raises(UserError, match="is being trained by another process"):
        plan(suite, tmp_path / "suite")


@pytest.mark.parametrize(
    "fields, fragments",
    [
        ({"grid": {"env_config.nope": [1]}}, ["grid env_config.nope: unknown key 'env_config.nope'", "env_name"]),
        ({"grid": {"algorithm.speed": [1, 2]}}, ["unknown key 'algorithm.speed'", "learning_rate"]),
        ({"grid": {}}, ["grid is empty"]),
        ({"grid": {"seed": []}}, ["grid: seed: expected a non-empty list of values"]),
        ({"grid": {"seed": [0, 0]}}, ["grid: seed: a value is listed twice"]),
        ({"grid": {"seed": ["a"]}}, ["grid seed: expected an integer, got 'a'"]),
        ({"grid": {"stop.timesteps_total": [1, 2]}}, ["grid: stop.timesteps_total is the budget's"]),
        ({"budget": {"steps": 5}}, ["budget: unknown key 'steps'; allowed: timesteps_total"]),
        ({"budget": {"timesteps_total": 0}}, ["budget: set at least one of timesteps_total"]),
        ({"experiment": "experiments/nope.yaml"}, ["experiment: experiments/nope.yaml not found"]),
        ({"sweep": 1}, ["unknown key 'sweep'; allowed: name, experiment, budget, set, grid"]),
        (
            {"set": {"env_config.distribution_mode": "memory"}, "grid": {"env_config.env_name": ["coinrun"]}},
            ["cell coinrun:", "coinrun has no memory mode"],
        ),
    ],
)
def test_bad_suites_are_one_line_before_ray_starts(tmp_path, fields, fragments):
    suite = write_suite(tmp_path / "bad.yaml", **fields)
    assert_one_line_error(run_cli("benchmark", str(suite), "--dir", str(tmp_path / "d"), timeout=120), *fragments)
    assert not (tmp_path / "d").exists()  # nothing written


def test_a_suite_directory_of_another_suite_is_refused(tmp_path):
    directory = tmp_path / "d"
    save(load_suite(write_suite(tmp_path / "other.yaml")), directory)
    mine = write_suite(tmp_path / "mine.yaml")
    result = run_cli("benchmark", str(mine), "--dir", str(directory), timeout=120)
    assert_one_line_error(result, f"{directory} is a directory of suite 'other', not 'mine'")
    changed = write_suite(tmp_path / "other.yaml", grid={"seed": [0, 1, 2]})
    result = run_cli("benchmark", str(changed), "--dir", str(directory), timeout=120)
    assert_one_line_error(result, "holds suite 'other' with another grid", "only its budget may change")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a-file").write_text("")
    result = run_cli("benchmark", str(mine), "--dir", str(tmp_path / "runs"), timeout=120)
    assert_one_line_error(result, "not a suite directory (no suite.yaml) and not empty")


def test_max_concurrent_must_be_positive(tmp_path):
    result = run_cli("benchmark", str(write_suite(tmp_path / "s.yaml")), "--max-concurrent", "0", timeout=120)
    assert_one_line_error(result, "--max-concurrent must be >= 1, got 0")


def test_make_targets_pass_the_suite_variables(tmp_path):
    def make_dry_run(*args: str) -> str:
        result = subprocess.run(
            ["make", "-n", *args, "VENV=/nonexistent-venv"], cwd=REPO, capture_output=True, text=True, check=True
        )
        return result.stdout

    assert "procgen-rl benchmark benchmarks/suites/smoke.yaml\n" in make_dry_run("benchmark")
    assert "benchmark s.yaml --dir d --max-concurrent 2\n" in make_dry_run(
        "benchmark", "SUITE=s.yaml", "SUITE_DIR=d", "MAX_CONCURRENT=2"
    )
    older, newer = tmp_path / "a-1", tmp_path / "b-2"
    for directory in (older, newer):
        directory.mkdir()
        (directory / "suite.yaml").write_text("name: x\n")
        time.sleep(0.05)  # distinct modification times: the newest suite is the default
    assert f"procgen-rl report {newer}\n" in make_dry_run("report", f"RESULTS_DIR={tmp_path}")
    assert "procgen-rl report d\n" in make_dry_run("report", f"RESULTS_DIR={tmp_path}", "SUITE_DIR=d")


def test_a_trial_asks_for_rllibs_bundles_each_with_some_resource(tmp_path):
    """Evaluation env runners that reserve no CPU keep their bundles (RLlib places runners by
    bundle position) with a token CPU share (Ray refuses an empty bundle) taken from the driver's."""
    from procgen_rl.launchers.tune_suite import resource_request

    evaluation = {
        "evaluation_num_env_runners": 2,
        "evaluation_interval": 1,
        "evaluation_config": {"num_cpus_per_env_runner": 0},
    }
    fixed = {"resources.num_env_runners": 2, "algorithm.rllib": {"evaluation": evaluation}}
    suite = load_suite(write_suite(tmp_path / "s.yaml", set=fixed, grid={"seed": [0]}))
    (cell,) = plan(suite, tmp_path / "suite")
    request = resource_request(cell)
    assert request.bundles == [{"CPU": 0.98}, {"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 0.01}, {"CPU": 0.01}]
    assert request.required_resources["CPU"] == pytest.approx(3.0)  # the driver and 2 env runners
