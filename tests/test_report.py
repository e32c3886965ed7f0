"""`procgen-rl report` on metrics.jsonl files written here: every number checked against them.

Real suites go through it in tests/test_benchmark.py (local) and tests/test_cloud.py (S3).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import assert_one_line_error, run_cli
from procgen_rl import report
from procgen_rl.procgen import GAMES, normalized_score


def write_run(path: Path, game: str, seed: int, rows: list[dict], algorithm: str = "PPO", levels: int = 200) -> Path:
    path.mkdir(parents=True)
    config = {
        "name": path.name,
        "seed": seed,
        "algorithm": {"name": algorithm},
        "env_config": {"env_name": game, "distribution_mode": "easy", "num_levels": levels},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rows(final: float, iterations: int = 4, batch: int = 131072, evaluate: bool = False) -> list[dict]:
    """A run whose returns climb linearly to `final`; with `evaluate`, eval_* keys every 2nd iteration."""
    out = []
    for i in range(1, iterations + 1):
        value = final * i / iterations
        row = {"iteration": i, "timesteps_total": i * batch, "time_total_s": 10.0 * i, "episode_reward_mean": value}
        if evaluate and i % 2 == 0:
            row |= {"eval_train_reward_mean": value + 1, "eval_test_reward_mean": value - 1}
        out.append(row)
    return out


def write_suite(directory: Path, grid: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    suite = {"name": directory.name, "experiment": "experiments/ppo-8m.yaml", "budget": {}, "set": {}, "grid": grid}
    (directory / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))


def test_resumed_runs_keep_the_last_history_and_cut_lines_are_left_out(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"iteration": i, "timesteps_total": 100 * i} for i in (1, 2, 3, 4)]  # killed after 4, checkpoint at 2
    lines += [{"iteration": i, "timesteps_total": 100 * i + 1} for i in (3,)]  # resumed, killed again after 3
    lines += [{"iteration": i, "timesteps_total": 100 * i + 2} for i in (3, 4, 5)]  # resumed from 2 again
    path.write_text("".join(json.dumps(row) + "\n" for row in lines) + '{"iteration": 6, "times')
    assert [(r["iteration"], r["timesteps_total"]) for r in report.read_metrics(path)] == [
        (1, 100),
        (2, 200),
        (3, 302),
        (4, 402),
        (5, 502),
    ]


def test_training_level_metrics_only(tmp_path):
    directory = tmp_path / "suite"
    write_suite(directory, {"env_config.env_name": ["coinrun", "starpilot"], "seed": [0, 1]})
    finals = {("coinrun", 0): 8.0, ("coinrun", 1): 9.0, ("starpilot", 0): 20.0, ("starpilot", 1): 20.0}
    for (game, seed), final in finals.items():
        data = rows(final)
        if (game, seed) == ("starpilot", 1):  # no episode ended in its last iteration: the last finite value counts
            data[-1]["episode_reward_mean"] = math.nan
        write_run(directory / f"{game}_seed-{seed}", game, seed, data)

    result = run_cli("report", str(directory), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((directory / "scores.json").read_text())
    coinrun, starpilot = scores["per_game"]
    assert coinrun["train"]["scores"] == [
        normalized_score(8.0, "coinrun", "easy"),
        normalized_score(9.0, "coinrun", "easy"),
    ]
    assert starpilot["train"]["return"] == pytest.approx((20.0 + 20.0 * 3 / 4) / 2)
    assert coinrun["test"] is None and coinrun["gap"] is None
    assert coinrun["env_steps"] == 4 * 131072
    paper = report.reference_at("coinrun", "train", 4 * 131072)
    assert coinrun["paper"]["train"] == pytest.approx(np.mean([normalized_score(r, "coinrun", "easy") for r in paper]))
    aggregate = scores["aggregates"]["suite"]["train"]
    per_game = [np.mean(coinrun["train"]["scores"]), np.mean(starpilot["train"]["scores"])]
    assert aggregate["mean"][0] == pytest.approx(np.mean(per_game))
    assert aggregate["median"][0] == pytest.approx(np.median(per_game))
    all_runs = coinrun["train"]["scores"] + starpilot["train"]["scores"]
    assert aggregate["IQM"][0] == pytest.approx(stats.trim_mean(all_runs, 0.25))
    assert aggregate["mean"][1] <= aggregate["mean"][0] <= aggregate["mean"][2]
    assert "test" not in scores["aggregates"]["suite"]
    text = (directory / "report.md").read_text()
    assert "Train returns are the training episodes' (`episode_reward_mean`" in text
    assert "Test returns: none. These runs logged no evaluation on unseen levels" in text
    assert {p.name for p in directory.glob("*.png")} == {"curves-coinrun.png", "curves-starpilot.png"}
    assert "suite" in result.stdout and "Report: " in result.stdout


def test_evaluation_metrics_and_a_variant_axis(tmp_path):
    directory = tmp_path / "suite"
    write_suite(
        directory, {"env_config.env_name": ["coinrun", "maze"], "algorithm.name": ["PPO", "APPO"], "seed": [0, 1, 2]}
    )
    for game in ("coinrun", "maze"):
        for algorithm, final in (("PPO", 7.0), ("APPO", 9.0)):
            for seed in range(3):
                data = rows(final + seed * 0.1, iterations=8, evaluate=True)
                write_run(directory / f"{game}_{algorithm}_{seed}", game, seed, data, algorithm)

    path, scores, notes = report.write([directory])
    assert notes == [] and scores["variants"] == ["algorithm.name=APPO", "algorithm.name=PPO"]
    assert scores["sources"] == {"train": ["eval_train_reward_mean"], "test": ["eval_test_reward_mean"]}
    row = next(r for r in scores["per_game"] if r["game"] == "maze" and r["variant"] == "algorithm.name=PPO")
    train = [normalized_score(7.0 + s * 0.1 + 1, "maze", "easy") for s in range(3)]
    test = [normalized_score(7.0 + s * 0.1 - 1, "maze", "easy") for s in range(3)]
    assert row["train"]["scores"] == pytest.approx(train) and row["test"]["scores"] == pytest.approx(test)
    assert row["gap"] == pytest.approx(np.mean(train) - np.mean(test))
    (improvement,) = [r for r in scores["probability_of_improvement"] if r["split"] == "test"]
    assert (improvement["x"], improvement["y"]) == ("algorithm.name=APPO", "algorithm.name=PPO")
    assert improvement["probability"][0] == 1.0  # every APPO run beats every PPO run on both games
    assert set(scores["aggregates"]) == {"algorithm.name=APPO", "algorithm.name=PPO", report.REFERENCE}
    text = path.read_text()
    assert "## Probability of improvement" in text and "| algorithm.name=APPO | algorithm.name=PPO | test | 2 |" in text


def test_probability_of_improvement_of_equal_variants_is_one_half():
    samples = [np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5, 0.7])]
    point, low, high = report.estimate([*samples, *samples], report.probability_of_improvement)
    assert point == 0.5 and low < 0.5 < high


def test_the_reference_is_the_papers_ppo():
    """The packaged logs give the mean normalized score its README states (paper's constants)."""
    for split, expected in (("train", 0.392), ("test", 0.224)):
        means = []
        for game in GAMES:
            steps, returns = report.reference()[(game, split)]
            last_million = (steps > 7_000_000) & (steps <= 8_011_776)  # up to the update nearest 8M
            means.append(report.paper_scores(returns[:, last_million].ravel(), game).mean())
        assert np.mean(means) == pytest.approx(expected, abs=5e-4)


def test_the_paper_is_left_out_of_another_setting(tmp_path):
    write_run(tmp_path / "run", "coinrun", 0, rows(8.0), levels=500)
    _, scores, _ = report.write([tmp_path / "run"])
    assert scores["per_game"][0]["paper"] is None and report.REFERENCE not in scores["aggregates"]
    assert "The paper's PPO is not shown" in (tmp_path / "run" / "report.md").read_text()


def test_a_directory_without_runs_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("report", str(tmp_path / "empty"), timeout=120), "empty: no runs")
    assert_one_line_error(run_cli("report", str(tmp_path / "nope"), timeout=120), "nope: no such directory")


def test_learning_plot_reads_learning_runs_and_suites(tmp_path):
    """benchmarks/plot_learning.py: a learning.py --out (lean.csv beside the harness run) and a
    suite's runs, each curve cut at its first point past the budget."""
    import plot_learning

    out = tmp_path / "learning"
    write_run(out / "harness", "coinrun", 1, rows(8.0), algorithm="PPG")
    (out / "lean.csv").write_text("step,mean_return\n131072,2.0\n262144,4.0\n")
    write_run(tmp_path / "suite" / "starpilot_seed-0", "starpilot", 0, rows(4.0, batch=100_000))
    curves = plot_learning.curves_of([out, tmp_path / "suite"])
    assert curves == {
        "coinrun": {
            ("harness PPG", 1): [(131072 * i, 2.0 * i) for i in range(1, 5)],
            ("lean PPG", 1): [(131072, 2.0), (262144, 4.0)],
        },
        "starpilot": {("harness PPO", 0): [(100_000 * i, 1.0 * i) for i in range(1, 5)]},
    }
    assert plot_learning.cut(curves["starpilot"]["harness PPO", 0], 250_000) == [
        (100_000, 1.0),
        (200_000, 2.0),
        (300_000, 3.0),
    ]
    plot_learning.plot(curves, 250_000, "a title", tmp_path / "learning.png")
    assert (tmp_path / "learning.png").stat().st_size > 0
