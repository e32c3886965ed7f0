"""A PPO iteration trains on exactly the batch it sampled, however late a runner's fragment comes;
the step budget counts the steps trained. Real Ray, real Procgen.

Marked slow: one iteration waits a minute for the late runner (tests/late_runner.py), idle.
"""

from __future__ import annotations

import pytest

from conftest import callbacks_env, run_cli
from test_training import metric_lines

pytestmark = pytest.mark.slow


def test_a_late_runner_changes_no_batch(tmp_path):
    # RLlib's default sample_timeout_s (60 s) would drop runner 2's first fragment and sample
    # another round from both runners: 3 fragments trained in place of 2.
    result = run_cli(
        "train",
        "experiments/smoke.yaml",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        "resources.num_env_runners=2",
        "--set",
        "callbacks=[late_runner:LateFirstFragment]",
        "--set",
        "evaluation.interval=0",
        env=callbacks_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = metric_lines(result.stdout)
    assert len(lines) == 2 and "Stopped by timesteps_total" in result.stdout
    for before, line in zip([{"timesteps_total": 0, "timesteps_trained": 0}, *lines], lines, strict=False):
        sampled = line["timesteps_total"] - before["timesteps_total"]
        trained = line["timesteps_trained"] - before["timesteps_trained"]
        # 2 runners x 4 envs x 64 steps; a fragment ends at the first vector step past its 256
        # steps (envs that reset in a step add none), so each may be up to 3 steps longer.
        assert sampled == trained and 512 <= sampled <= 512 + 2 * 3, lines
    assert lines[-1]["timesteps_trained"] >= 1024  # the budget, in steps trained
