"""The env runners' connector pieces inside a real RLlib env runner: what the env and the learner get."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from procgen_rl.config import load_experiment, parse_set_args
from procgen_rl.trainer import build_algorithm_config

pytestmark = pytest.mark.slow  # real RLlib env runners with Procgen and torch

SMALL = ["algorithm.num_envs=4", "resources.num_env_runners=1", "model.custom_model_config={depths: [4], hidden: 16}"]


@pytest.fixture(scope="module")
def runner():
    config = build_algorithm_config(load_experiment("experiments/ppo-8m.yaml", parse_set_args(SMALL)))
    runner = config.env_runner_cls(config=config)  # the runner training uses: its loop and these pieces
    yield runner
    runner.stop()


def test_same_seed_same_samples_as_rllibs_default_pipelines():
    experiment = load_experiment("experiments/ppo-8m.yaml", parse_set_args(SMALL))
    rllib_pipelines = build_algorithm_config(experiment).env_runners(
        env_to_module_connector=None,
        add_default_connectors_to_env_to_module_pipeline=True,
        module_to_env_connector=None,
        add_default_connectors_to_module_to_env_pipeline=True,
    )
    samples = []
    for config in (build_algorithm_config(experiment), rllib_pipelines):
        runner = SingleAgentEnvRunner(config=config)  # seeds torch: the same initial weights
        torch.manual_seed(1)  # the same action samples
        episodes = runner.sample(num_timesteps=128)
        runner.stop()
        samples.append(
            [
                (
                    episode.get_observations(),
                    episode.get_actions(),
                    episode.get_extra_model_outputs(Columns.ACTION_LOGP),
                )
                for episode in episodes
            ]
        )
    ours, theirs = samples
    assert len(ours) == len(theirs)
    for episode, same_episode in zip(ours, theirs, strict=True):
        for column, same_column in zip(episode, same_episode, strict=True):
            np.testing.assert_array_equal(column, same_column)


def test_exploring_samples_actions_with_their_log_probabilities_and_values(runner):
    episodes = runner.sample(num_timesteps=128, explore=True)
    assert sum(len(episode) for episode in episodes) >= 128
    greedy = []
    for episode in episodes:
        frames = episode.get_observations()
        assert frames.dtype == np.uint8 and frames.shape[1:] == (3, 64, 64)
        logits = torch.from_numpy(episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS))
        actions = torch.from_numpy(episode.get_actions())
        expected_logp = torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
        np.testing.assert_allclose(episode.get_extra_model_outputs(Columns.ACTION_LOGP), expected_logp, atol=1e-5)
        assert episode.get_extra_model_outputs(Columns.VF_PREDS).shape == (len(episode),)
        greedy.append(actions == logits.argmax(-1))
    assert not torch.cat(greedy).all()  # sampled, not the argmax


def test_without_exploration_actions_are_greedy(runner):
    # Fresh episodes, as an evaluation runner has: forward_inference returns no values to store.
    for episode in runner.sample(num_timesteps=64, explore=False, force_reset=True):
        logits = episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS)
        np.testing.assert_array_equal(episode.get_actions(), logits.argmax(-1))
