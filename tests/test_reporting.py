"""The metric line: stable names, parseable by the same regex SageMaker metric definitions use."""

import io
import json
import math
import re

from procgen_rl.reporting import (
    METRIC_KEYS,
    METRIC_LINE_REGEX,
    METRICS_FILE,
    Reporter,
    metric_line,
    parse_metric_line,
    progress_line,
    tensorboard_tag,
)


def sample_metrics():
    return {
        "iteration": 3,
        "timesteps_total": 49152,
        "timesteps_trained": 49152,
        "episodes_total": 12,
        "episode_reward_mean": 6.25,
        "episode_reward_min": 0.0,
        "episode_reward_max": 10.0,
        "episode_len_mean": 210.5,
        "normalized_score": 0.25,
        "steps_per_s": 118.3,
        "time_total_s": 415.0,
        "policy_loss": -0.012,
        "vf_loss": 0.3,
        "entropy": 2.7,
        "eval_train_reward_mean": 7.5,
        "eval_test_reward_mean": 6.0,
        "eval_train_normalized_score": 0.5,
        "eval_test_normalized_score": 0.2,
        "eval_generalization_gap": 0.3,
        "aux_value_loss": 0.25,  # a PPG iteration that ended a phase
        "aux_kl": 0.002,
        "aux_vf_loss": 0.125,
    }


def test_line_round_trips_in_fixed_order():
    line = metric_line(sample_metrics())
    assert line.startswith("[metrics] iteration=3 timesteps_total=49152 ")
    assert parse_metric_line(line) == sample_metrics()
    assert [f.split("=")[0] for f in line.split()[1:]] == list(METRIC_KEYS)


def test_regex_extracts_each_metric():
    line = metric_line(sample_metrics())
    for key, value in sample_metrics().items():
        match = re.search(METRIC_LINE_REGEX.format(name=key), line)
        assert match and float(match.group(1)) == value, key


def test_nan_is_written_as_nan():
    metrics = sample_metrics() | {"normalized_score": math.nan}
    assert "normalized_score=nan" in metric_line(metrics)


def test_progress_line_shows_steps_reward_speed_eta():
    text = progress_line(sample_metrics(), 8_000_000, 3 * 3600 + 60)
    assert "49,152/8,000,000 steps" in text and "reward 6.25" in text
    assert "118 steps/s" in text and "ETA 3h01m" in text


def test_progress_line_counts_steps_trained_and_shows_the_latest_evaluation():
    metrics = sample_metrics() | {"timesteps_total": 50000}
    assert "49,152/8,000,000 steps" in progress_line(metrics, 8_000_000, 60)
    assert "eval 7.50/6.00" in progress_line(metrics, 8_000_000, 60, metrics)


def test_eval_metrics_have_their_tensorboard_group():
    assert tensorboard_tag("eval_test_normalized_score") == "eval/test_normalized_score"
    assert tensorboard_tag("eval_generalization_gap") == "eval/generalization_gap"
    assert tensorboard_tag("vf_loss") == "losses/vf_loss" and tensorboard_tag("steps_per_s") == "charts/steps_per_s"


def test_metrics_jsonl_appends_each_iteration_without_nans(tmp_path):
    without_evaluation = {k: v for k, v in sample_metrics().items() if not k.startswith("eval_")}
    for metrics in (without_evaluation | {"normalized_score": math.nan}, sample_metrics()):
        reporter = Reporter(tmp_path, io.StringIO())  # a resumed run appends to the same file
        reporter.report(metrics, 8_000_000, 60)
        reporter.close()
    first, second = (json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines())
    assert "normalized_score" not in first and "eval_test_reward_mean" not in first
    assert second == sample_metrics() and list(second) == list(METRIC_KEYS)
    assert isinstance(first["timesteps_total"], int) and first["time_total_s"] == 415.0
