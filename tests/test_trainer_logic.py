"""The trainer's pure decisions: stop limits, ETA, hyperparameter names -> RLlib's. No Ray."""

import math
from pathlib import Path

import numpy as np
import pytest

from procgen_rl.config import load_experiment
from procgen_rl.reporting import STEPS_TRAINED
from procgen_rl.run_dir import TrainState
from procgen_rl.trainer import (
    eta_seconds,
    evaluated,
    evaluation_metrics,
    rllib_training_args,
    sampled,
    stop_reason,
    trained,
)

REPO = Path(__file__).resolve().parent.parent


def experiment(**overrides):
    return load_experiment(REPO / "experiments/ppo-8m.yaml", overrides)


def test_timesteps_limit_counts_steps_trained():
    e = experiment()
    assert stop_reason(e, TrainState(timesteps_total=9_000_000, timesteps_trained=7_999_999)) is None
    assert stop_reason(e, TrainState(timesteps_total=8_000_000, timesteps_trained=8_000_000)) == "timesteps_total"


@pytest.mark.parametrize(
    "result, expected",
    [
        (
            {"env_runners": {"num_env_steps_sampled": 16389}, "learners": {"__all_modules__": {STEPS_TRAINED: 16389}}},
            16389,
        ),
        ({"env_runners": {"num_env_steps_sampled": 4096}, "learners": {"__all_modules__": {}}}, 4096),  # APPO
        ({}, 0),  # no samples, nothing trained
    ],
)
def test_steps_trained_as_the_learner_counts_them_else_as_sampled(result, expected):
    assert trained(result) == expected


def test_iteration_limit_and_disabled_limits():
    e = experiment(**{"stop.timesteps_total": 0, "stop.training_iteration": 3})
    assert stop_reason(e, TrainState(iteration=2, timesteps_total=10**9)) is None
    assert stop_reason(e, TrainState(iteration=3)) == "training_iteration"


def test_eta_uses_the_nearest_limit():
    e = experiment(**{"stop.time_total_s": 3600})
    state = TrainState(iteration=10, timesteps_total=4_100_000, timesteps_trained=4_000_000, time_total_s=600.0)
    assert eta_seconds(e, state, trained_per_s=1000.0) == pytest.approx(3000.0)  # time limit first
    assert eta_seconds(experiment(), state, trained_per_s=1000.0) == pytest.approx(4000.0)


def test_evaluation_metrics_only_on_the_iterations_that_evaluate():
    e = experiment(**{"evaluation.interval": 10})
    result = {"evaluation": {"env_runners": {"train_reward_mean": 8.0, "test_reward_mean": 6.5}}}
    assert [i for i in range(1, 31) if evaluated(e, TrainState(iteration=i))] == [10, 20, 30]
    assert not evaluated(experiment(**{"evaluation.interval": 0}), TrainState(iteration=10))  # 0: never
    metrics = evaluation_metrics(result, e)
    assert metrics["eval_train_reward_mean"] == 8.0 and metrics["eval_test_reward_mean"] == 6.5
    # coinrun easy: R_min 5, R_max 10
    assert metrics["eval_train_normalized_score"] == 0.6 and metrics["eval_test_normalized_score"] == 0.3
    assert metrics["eval_generalization_gap"] == pytest.approx(0.3)
    assert math.isnan(evaluation_metrics({}, e)["eval_test_reward_mean"])  # no healthy evaluation runner


def test_paper_names_map_to_rllib_arguments():
    args = rllib_training_args(experiment())
    assert args["lr"] == 5e-4 and args["gamma"] == 0.999 and args["lambda_"] == 0.95
    assert args["clip_param"] == 0.2 and args["entropy_coeff"] == 0.01 and args["num_epochs"] == 3
    assert args["train_batch_size_per_learner"] == 16384 and args["minibatch_size"] == 2048
    assert args["use_kl_loss"] is False
    assert args["vf_loss_coeff"] == 0.5  # on 0.5 x squared error, in our PPO loss as in APPO's
    split = rllib_training_args(experiment(**{"resources.num_learners": 2}))
    assert split["train_batch_size_per_learner"] == 8192 and split["minibatch_size"] == 1024


@pytest.mark.parametrize(
    "env_runners, expected",
    [
        ({"num_env_steps_sampled": 16435, "num_episodes": 13.0}, (16435, 13)),
        ({"num_env_steps_sampled": np.int64(1024), "num_episodes": np.int64(2)}, (1024, 2)),  # from remote runners
        ({}, (0, 0)),  # an asynchronous (APPO) iteration before any samples arrived
        ({"num_env_steps_sampled": float("nan"), "num_episodes": float("nan")}, (0, 0)),  # none this iteration
    ],
)
def test_an_iteration_without_samples_counts_zero(env_runners, expected):
    result = {"env_runners": env_runners}
    assert (sampled(result, "num_env_steps_sampled"), sampled(result, "num_episodes")) == expected
