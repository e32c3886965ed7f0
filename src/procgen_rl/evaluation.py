"""Evaluation during training: the policy on its training levels and on unseen levels, every
`evaluation.interval` iterations, on evaluation env runners of its own, in parallel with training.

RLlib schedules it (`evaluation_parallel_to_training`): when an iteration is due, it copies the
learner's weights to the evaluation env runners and calls `evaluate` (its custom evaluation
function) while the training iteration runs; the iteration ends when both have. So the evaluation
at iteration N plays the policy as iteration N began, trained for N - 1 iterations. RLlib would
train in a helper thread and evaluate in the caller's; `evaluate_beside_training` swaps them, so
the learner always trains on one thread (its docstring says why).

`evaluate` asks each evaluation runner for its share of both splits' episodes. A runner plays them
with `rollout.run_episodes`, as `procgen-rl rollout` does: the training split is the run's
env_config, the test split `rollout.unseen_levels` of it (num_levels 0, starting past the training
levels), both with the policy's sampled actions; each env plays a fixed number of episodes, its
first ones. Its envs are fresh for each evaluation, seeded from (seed, iteration, runner, split),
so that a rerun evaluates the same levels. The runners' own env (the training split) is never
reset, so it starts no games.

The means reach `result["evaluation"]["env_runners"]` under SPLIT_KEYS, where the trainer reads
them (procgen_rl.trainer.evaluation_metrics).
"""

from __future__ import annotations

import concurrent.futures
import functools
import types
from typing import Any

import numpy as np

from procgen_rl.config import INT32_MAX, EnvConfig, Experiment
from procgen_rl.rollout import Played, run_episodes, unseen_levels

SPLITS = ("train", "test")
SPLIT_KEYS = {split: f"{split}_reward_mean" for split in SPLITS}


def rllib_evaluation_args(experiment: Experiment) -> dict[str, Any]:
    """`AlgorithmConfig.evaluation()` arguments for the experiment's evaluation section.

    The evaluation runners reserve no CPU, GPU or env runner slot, so they never wait for the
    training runners' resources: they play only while an evaluation runs, on whatever cores are
    free, with one torch thread each (Ray's default for an actor without CPUs) and the model on
    the CPU (docs/architecture.md#evaluation-during-training has the cost).
    """
    evaluation = experiment.evaluation
    return {
        "evaluation_interval": evaluation.interval,
        "evaluation_num_env_runners": evaluation.num_env_runners,
        "evaluation_duration": evaluation.episodes,
        "evaluation_duration_unit": "episodes",
        "evaluation_parallel_to_training": True,
        "custom_evaluation_function": evaluate,
        "evaluation_config": {
            "num_envs_per_env_runner": evaluation.num_envs // evaluation.num_env_runners,
            "num_cpus_per_env_runner": 0,
            "num_gpus_per_env_runner": 0,
            "custom_resources_per_env_runner": {},
            "create_local_env_runner": False,
        },
    }


def split_seed(seed: int, iteration: int, runner: int, split: int, num_envs: int) -> int:
    """A pool seed for one split of one runner's evaluation: distinct per evaluation, reproducible,
    and small enough that its envs' seeds (pool seed x num_envs + env) stay 31-bit."""
    entropy = np.random.SeedSequence([seed, iteration, runner, split]).generate_state(1)[0]
    return int(entropy) % (INT32_MAX // num_envs)


def play_splits(runner: Any, episodes: int, iteration: int) -> dict[str, Played]:
    """On an evaluation env runner: `episodes` episodes of each split with the runner's module."""
    config = runner.config
    train = EnvConfig(**config.env_config["procgen"])
    num_envs = config.num_envs_per_env_runner
    return {
        split: run_episodes(
            runner.module,
            env_config,
            episodes,
            split_seed(config.seed, iteration, runner.worker_index, index, num_envs),
            num_envs=num_envs,
        )
        for index, (split, env_config) in enumerate(zip(SPLITS, (train, unseen_levels(train)), strict=True))
    }


def evaluate(algorithm: Any, eval_runners: Any) -> tuple[dict, int, int]:
    """RLlib's custom evaluation function: play both splits on every healthy evaluation runner and
    log each split's mean return (and episode count) into the algorithm's evaluation results."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EVALUATION_RESULTS

    config = algorithm.config
    played = eval_runners.foreach_env_runner(
        functools.partial(
            play_splits,
            episodes=config.evaluation_duration // config.evaluation_num_env_runners,
            iteration=algorithm.iteration + 1,
        ),
        local_env_runner=False,
    )
    for split in SPLITS if played else ():  # no healthy runner: no values, the metrics stay NaN
        returns = [r for by_split in played for r in by_split[split].returns]
        key = (EVALUATION_RESULTS, ENV_RUNNER_RESULTS)
        algorithm.metrics.log_value((*key, SPLIT_KEYS[split]), float(np.mean(returns)), reduce="item")
        algorithm.metrics.log_value((*key, f"{split}_episodes"), len(returns), reduce="item")
    return {}, 0, 0  # RLlib's new API stack reads the logged values, not these


def evaluate_beside_training(algorithm: Any) -> None:
    """Make `algorithm`'s evaluating iterations train on the calling thread and evaluate on a
    helper thread, the reverse of RLlib's arrangement.

    Torch's CPU kernels run on OpenMP (libgomp), which gives each thread that starts parallel work
    a team of its own. A training iteration on a fresh thread, beside the team the caller's thread
    already has, makes libgomp count more threads than cores, and it then stops spin-waiting
    between kernels: the learner's threads sleep and wake around every kernel, and a CPU learner
    trains markedly slower for the whole iteration (a PPG auxiliary phase that falls on an
    evaluating iteration, for one). The evaluation only waits on its runners, so the helper thread
    costs it nothing.
    """

    def run_one_training_iteration_and_evaluation_in_parallel(self: Any) -> tuple[Any, Any, Any]:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="procgen-rl-evaluation") as executor:
            evaluation = executor.submit(self._run_one_evaluation, parallel_train_future=None)
            train_results, train_iter_ctx = self._run_one_training_iteration()
            return train_results, evaluation.result(), train_iter_ctx

    algorithm._run_one_training_iteration_and_evaluation_in_parallel = types.MethodType(
        run_one_training_iteration_and_evaluation_in_parallel, algorithm
    )
