"""Evaluation during training, as an evaluation env runner plays it: real Procgen, a real RLModule
(a small IMPALA-CNN), no Ray. The slow tier checks it inside training (tests/test_training.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from conftest import REPO
from procgen_rl.config import EnvConfig, load_experiment
from procgen_rl.envs import rllib_env_config
from procgen_rl.evaluation import play_splits, rllib_evaluation_args
from procgen_rl.procgen import FRAME_SHAPE, NUM_ACTIONS


def evaluation_runner(env_config: EnvConfig, num_envs: int, seed: int = 0, worker_index: int = 1) -> SimpleNamespace:
    """What `play_splits` reads from an evaluation env runner: its config, module and index."""
    import gymnasium as gym
    import numpy as np
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from procgen_rl.models.impala_cnn import ImpalaCNN

    module = RLModuleSpec(
        module_class=ImpalaCNN,
        observation_space=gym.spaces.Box(0, 255, FRAME_SHAPE, np.uint8),
        action_space=gym.spaces.Discrete(NUM_ACTIONS),
        model_config={"depths": [4], "hidden": 16, "precision": "fp32"},
    ).build()
    config = SimpleNamespace(
        env_config=rllib_env_config(env_config, 0.999, True), num_envs_per_env_runner=num_envs, seed=seed
    )
    return SimpleNamespace(config=config, module=module, worker_index=worker_index)


@pytest.fixture(scope="module")
def runner() -> Iterator[SimpleNamespace]:
    """One torch thread, as Ray gives an evaluation runner (it reserves no CPU): on a loaded
    machine two threads of a tiny network's forward spin for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # bossfight: a random policy's episodes last some 50 steps (coinrun's up to 1,000)
    yield evaluation_runner(EnvConfig(env_name="bossfight", num_levels=10, start_level=100), num_envs=2)
    torch.set_num_threads(threads)


def test_training_levels_and_unseen_levels_differ(runner):
    played = play_splits(runner, episodes=4, iteration=1)
    assert len(played["train"].returns) == len(played["test"].returns) == 4
    assert all(100 <= level < 110 for level in played["train"].levels)
    assert all(not 100 <= level < 110 for level in played["test"].levels)
    assert len(set(played["test"].levels)) == 4  # drawn from all 2^31 levels


def test_each_evaluation_plays_other_levels_and_a_rerun_the_same(runner):
    first, again = play_splits(runner, 2, iteration=1), play_splits(runner, 2, iteration=1)
    later = play_splits(runner, 2, iteration=2)
    assert first["test"].levels == again["test"].levels and first["train"].levels == again["train"].levels
    assert set(first["test"].levels).isdisjoint(later["test"].levels)


def test_rllib_runs_it_in_parallel_on_runners_of_its_own():
    experiment = load_experiment(
        REPO / "experiments/ppo-8m.yaml",
        {
            "evaluation.interval": 5,
            "evaluation.episodes": 64,
            "evaluation.num_envs": 16,
            "evaluation.num_env_runners": 2,
        },
    )
    args = rllib_evaluation_args(experiment)
    assert args["evaluation_interval"] == 5 and args["evaluation_parallel_to_training"] is True
    assert args["evaluation_num_env_runners"] == 2 and args["evaluation_duration"] == 64
    assert args["evaluation_config"]["num_envs_per_env_runner"] == 8
    # No CPU, GPU or env runner slot: they never wait for the training runners' resources.
    assert args["evaluation_config"]["num_cpus_per_env_runner"] == 0
    assert args["evaluation_config"]["num_gpus_per_env_runner"] == 0
    assert args["evaluation_config"]["custom_resources_per_env_runner"] == {}
