"""The run directory's metrics.jsonl across checkpoints and resumes, and the counters a checkpoint
keeps. No Ray."""

from __future__ import annotations

import json

from procgen_rl.run_dir import RLLIB_METADATA, STATE_FILE, RunDir, TrainState, load_state


def rows(run: RunDir) -> list[int]:
    return [json.loads(line)["iteration"] for line in run.metrics_path.read_text().splitlines()]


def append(run: RunDir, *iterations: int) -> None:
    with run.metrics_path.open("a") as jsonl:
        jsonl.writelines(json.dumps({"iteration": i}) + "\n" for i in iterations)


def test_a_resume_continues_metrics_from_its_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    append(run, 1, 2)
    checkpoint = run.save_checkpoint(lambda path: None, TrainState(iteration=2), keep=0)
    append(run, 3)  # then killed before the next checkpoint
    run.rewind_metrics(checkpoint)
    assert rows(run) == [1, 2]
    run.metrics_path.unlink()  # a SageMaker spot restart: checkpoints restored, the run directory not
    run.rewind_metrics(checkpoint)
    assert rows(run) == [1, 2]
    run.rewind_metrics(None)  # trained from scratch again: nothing to continue
    assert not run.metrics_path.exists()


def test_checkpoints_from_before_the_trained_count_resume_with_steps_sampled(tmp_path):
    (tmp_path / RLLIB_METADATA).write_text("{}")
    (tmp_path / STATE_FILE).write_text(json.dumps({"iteration": 3, "timesteps_total": 1557, "time_total_s": 9.0}))
    assert load_state(tmp_path) == TrainState(
        iteration=3, timesteps_total=1557, timesteps_trained=1557, time_total_s=9.0
    )
