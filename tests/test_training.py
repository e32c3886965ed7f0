"""Real Ray, real Procgen, real torch: train -> checkpoint -> resume -> rollout -> TensorBoard.

Marked slow (about 2-3 minutes on 2 cores); `make test` runs them, as CI does.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import CLI, REPO, callbacks_env, run_cli, tensorboard_scalar_tags

pytestmark = pytest.mark.slow
METRIC_LINE = re.compile(r"^\[metrics\] .*$", re.MULTILINE)


def metric_lines(stdout: str) -> list[dict[str, float]]:
    from procgen_rl.reporting import parse_metric_line

    return [parse_metric_line(line) for line in METRIC_LINE.findall(stdout)]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    result = run_cli("train", "experiments/smoke.yaml", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


EVAL_KEYS = {
    "eval_train_reward_mean",
    "eval_test_reward_mean",
    "eval_train_normalized_score",
    "eval_test_normalized_score",
    "eval_generalization_gap",
}


def jsonl_rows(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_trains_reports_and_checkpoints(smoke_run):
    run_dir, result = smoke_run
    lines = metric_lines(result.stdout)
    assert [m["iteration"] for m in lines] == [1, 2]
    assert 0 < lines[0]["timesteps_total"] < lines[1]["timesteps_total"]
    assert lines[1]["timesteps_total"] >= 1024 and lines[1]["steps_per_s"] > 0
    assert all(m["timesteps_trained"] == m["timesteps_total"] for m in lines)  # PPO trains what it sampled
    assert f"Results:     {run_dir}" in result.stdout
    # The layout is the run's first line and its config.yaml holds it: 8 envs, at least 4 per runner.
    first = result.stdout.splitlines()[0]
    runners = int(re.match(r"layout auto: (\d) env runners? x (\d) envs", first).group(1))
    resources = yaml.safe_load((run_dir / "config.yaml").read_text())["resources"]
    assert resources["num_env_runners"] == runners and 8 // runners >= 4 and resources["layout"] == "auto"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint_000001", "checkpoint_000002"]
    state = json.loads((run_dir / "checkpoints/checkpoint_000002/trainer_state.json").read_text())
    assert state["iteration"] == 2 and state["timesteps_total"] == lines[1]["timesteps_total"]


def test_an_evaluating_iteration_trains_on_the_callers_thread(tmp_path):
    """procgen_rl.evaluation.evaluate_beside_training: the evaluation takes the helper thread, so
    the learner's torch work stays on the thread every other iteration trains on."""
    result = run_cli(
        "train",
        "experiments/smoke.yaml",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        "resources.num_env_runners=0",
        "--set",
        "evaluation.interval=1",
        "--set",
        "callbacks=[thread_probe:Threads]",
        env=callbacks_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    threads = re.findall(r"^\[thread\] (\w+) on (\S+)$", result.stdout, re.MULTILINE)
    assert {thread for what, thread in threads if what == "sampling"} == {"MainThread"}, threads
    evaluating = [thread for what, thread in threads if what == "evaluating"]
    assert len(evaluating) == 2 and all(t.startswith("procgen-rl-evaluation") for t in evaluating), threads


def test_smoke_evaluates_once_and_writes_metrics_jsonl(smoke_run):
    run_dir, result = smoke_run
    lines = metric_lines(result.stdout)
    assert not EVAL_KEYS & set(lines[0]) and EVAL_KEYS <= set(lines[1])  # evaluation.interval: 2
    assert lines[1]["eval_generalization_gap"] == pytest.approx(
        lines[1]["eval_train_normalized_score"] - lines[1]["eval_test_normalized_score"], abs=1e-5
    )
    numbers = [{k: v for k, v in line.items() if not math.isnan(v)} for line in lines]  # no episode yet: NaN
    for row, line in zip(jsonl_rows(run_dir), numbers, strict=True):
        assert row == pytest.approx(line, rel=1e-5)  # the line prints 6 significant digits


@pytest.fixture(scope="module")
def resumed_run(smoke_run) -> tuple[Path, subprocess.CompletedProcess, float]:
    run_dir, first = smoke_run
    steps_before = metric_lines(first.stdout)[-1]["timesteps_total"]
    result = run_cli("train", "--resume", str(run_dir), "--set", "stop.timesteps_total=2048")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result, steps_before


def test_resume_continues_step_counter_and_iterations(resumed_run):
    run_dir, result, steps_before = resumed_run
    lines = metric_lines(result.stdout)
    assert lines[0]["iteration"] == 3
    assert lines[0]["timesteps_total"] > steps_before  # continued, not restarted from 0
    assert lines[-1]["timesteps_total"] >= 2048
    assert f"at iteration 2, {int(steps_before):,} steps" in result.stdout
    state = json.loads((sorted((run_dir / "checkpoints").iterdir())[-1] / "trainer_state.json").read_text())
    assert state["timesteps_total"] == lines[-1]["timesteps_total"]
    assert len(list((run_dir / "checkpoints").iterdir())) == 2  # checkpoint.keep: 2
    rows = jsonl_rows(run_dir)  # continued: one row per iteration, evaluations at 2 and 4
    assert [row["iteration"] for row in rows] == [1, 2, 3, 4]
    assert [row["iteration"] for row in rows if EVAL_KEYS <= set(row)] == [2, 4]


def test_rollout_writes_scores_and_a_decodable_video(resumed_run):
    import imageio.v2 as imageio

    run_dir, _, _ = resumed_run
    result = run_cli("rollout", str(run_dir), "--episodes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^train \(200 levels from 0\): mean return [-0-9.]+, normalized score", result.stdout, re.M)
    assert re.search(r"^test  \(unseen levels\): mean return", result.stdout, re.M)
    assert "generalization gap" in result.stdout
    summary = json.loads((run_dir / "rollout/summary.json").read_text())
    assert len(summary["train"]["returns"]) == len(summary["test"]["returns"]) == 2
    assert summary["test"]["num_levels"] == 0 and summary["distribution_mode"] == "easy"
    reader = imageio.get_reader(summary["video"])
    frame = reader.get_data(0)
    assert frame.shape == (256, 256, 3) and reader.count_frames() > 1


def test_tensorboard_event_files_hold_the_scalars(resumed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, result, _ = resumed_run
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"charts/steps_per_s", "charts/time_total_s", "losses/policy_loss", "losses/entropy"} <= set(tags)
    steps = [e.step for e in events.Scalars("charts/steps_per_s")]
    assert len(steps) == 4 and steps == sorted(steps)  # 2 iterations + 2 after resume, one axis
    evaluations = [e.step for e in events.Scalars("eval/test_normalized_score")]
    assert evaluations == [steps[1], steps[3]]
    assert {f"eval/{key.removeprefix('eval_')}" for key in EVAL_KEYS} <= set(tags)


def test_tensorboard_server_serves_the_run(resumed_run):
    run_dir, _, _ = resumed_run
    tags = tensorboard_scalar_tags(run_dir, "eval/generalization_gap")
    assert "charts/steps_per_s" in tags and "eval/generalization_gap" in tags and "eval/test_reward_mean" in tags


def test_sigterm_finishes_the_iteration_and_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            *CLI,
            "train",
            "experiments/smoke.yaml",
            "--run-dir",
            str(run_dir),
            "--set",
            "stop.timesteps_total=10000000",
            "--set",
            "checkpoint.frequency=0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("[metrics]"):
            process.send_signal(signal.SIGTERM)
            break
    output += process.stdout.readlines()
    assert process.wait(300) == 0, "".join(output)[-3000:]
    text = "".join(output)
    assert "SIGTERM: finishing this iteration" in text and "Stopped by signal" in text
    checkpoints = list((run_dir / "checkpoints").glob("checkpoint_*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").is_file()


@pytest.mark.parametrize(
    "algorithm", [[], ["--set", "algorithm.name=IMPALA", "--set", "algorithm.rllib={}"]], ids=["APPO", "IMPALA"]
)
def test_asynchronous_algorithms_train(tmp_path, algorithm):
    # APPO and IMPALA sample asynchronously: an iteration may end before any samples arrived, so
    # stop on steps. A 4,096-frame update of the paper's network outlasts the 5 s RLlib's shutdown
    # waits for its learner thread on a CPU: the run must still exit 0 (procgen_rl.async_learners).
    result = run_cli(
        "train",
        "experiments/appo-8m.yaml",
        "--run-dir",
        str(tmp_path / "run"),
        *algorithm,
        "--set",
        "algorithm.num_envs=64",
        "--set",
        "algorithm.num_steps=64",
        "--set",
        "stop.timesteps_total=4096",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert metric_lines(result.stdout)[-1]["timesteps_total"] >= 4096
