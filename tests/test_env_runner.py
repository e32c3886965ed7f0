"""procgen_rl's env runner against RLlib's own, in one process: the same seed gives the same samples."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.metrics import EPISODE_LEN_MEAN, EPISODE_RETURN_MEAN, NUM_ENV_STEPS_SAMPLED

from procgen_rl.config import load_experiment, parse_set_args
from procgen_rl.env_runner import HostGPUEnvRunner, ProcgenEnvRunner
from procgen_rl.trainer import build_algorithm_config

pytestmark = pytest.mark.slow  # real RLlib env runners with Procgen and torch

SMALL = ["algorithm.num_envs=4", "resources.num_env_runners=1", "model.custom_model_config={depths: [4], hidden: 16}"]
JUMPER = [*SMALL, "env_config.env_name=jumper"]  # near-uniform policies finish jumper episodes within 100 steps
COLUMNS = (Columns.ACTION_DIST_INPUTS, Columns.ACTION_LOGP, Columns.VF_PREDS)


def episode_data(episode) -> list:
    return [
        episode.id_ is not None,
        episode.t_started,
        episode.is_terminated,
        episode.is_truncated,
        episode.get_observations(),
        episode.get_actions(),
        episode.get_rewards(),
        [info.get("episode_return") for info in episode.get_infos()],
        *(episode.get_extra_model_outputs(column) for column in COLUMNS),
    ]


def test_same_seed_same_episodes_and_metrics_as_rllibs_runner():
    experiment = load_experiment("experiments/ppo-8m.yaml", parse_set_args(JUMPER))
    ours = build_algorithm_config(experiment)
    assert ours.env_runner_cls is ProcgenEnvRunner  # what training uses
    rllib = build_algorithm_config(experiment).env_runners(
        env_runner_cls=None,
        env_to_module_connector=None,
        add_default_connectors_to_env_to_module_pipeline=True,
        module_to_env_connector=None,
        add_default_connectors_to_module_to_env_pipeline=True,
    )
    samples, metrics = [], []
    for runner_class, config in ((ProcgenEnvRunner, ours), (SingleAgentEnvRunner, rllib)):
        runner = runner_class(config=config)  # seeds torch: the same initial weights
        torch.manual_seed(1)  # the same action samples
        # Two fragments: episodes finish inside them and continue across the cut.
        samples.append([[episode_data(episode) for episode in runner.sample(num_timesteps=400)] for _ in range(2)])
        metrics.append(runner.get_metrics())
        runner.stop()
    (ours_fragments, rllib_fragments), (ours_metrics, rllib_metrics) = samples, metrics
    assert sum(data[2] for data in ours_fragments[0] + ours_fragments[1]) > 0  # some episodes finished
    for ours_episodes, rllib_episodes in zip(ours_fragments, rllib_fragments, strict=True):
        assert len(ours_episodes) == len(rllib_episodes)
        for ours_data, rllib_data in zip(ours_episodes, rllib_episodes, strict=True):
            for value, same_value in zip(ours_data, rllib_data, strict=True):
                np.testing.assert_array_equal(value, same_value)
    for key in (NUM_ENV_STEPS_SAMPLED, EPISODE_RETURN_MEAN, EPISODE_LEN_MEAN, "raw_episode_return_mean"):
        assert ours_metrics[key] == rllib_metrics[key], key


def test_episode_hooks_run_only_where_a_callback_has_them():
    config = build_algorithm_config(load_experiment("experiments/ppo-8m.yaml", parse_set_args(SMALL)))
    torch.utils.deterministic.fill_uninitialized_memory = True
    runner = ProcgenEnvRunner(config=config)
    try:
        assert not torch.utils.deterministic.fill_uninitialized_memory  # procgen_rl.models.without_nan_fill
        # The always-on episode metrics implement on_episode_end only.
        assert runner._hooks_in_use == {
            "on_episode_created": False,
            "on_episode_start": False,
            "on_episode_step": False,
            "on_episode_end": True,
        }
        assert not runner.module.training  # eval mode, once, for good
    finally:
        runner.stop()


@pytest.mark.parametrize("runner_class", [ProcgenEnvRunner, HostGPUEnvRunner])
def test_a_remote_runner_takes_its_threads_and_its_hosts_device(runner_class):
    """A remote runner (worker_index 1) runs as many torch threads as CPUs Ray reserves for it; one
    that infers on its host's GPU does so where a GPU is visible, else on the CPU."""
    experiment = load_experiment(
        "experiments/ppo-8m.yaml", parse_set_args([*SMALL, "resources.num_cpus_per_env_runner=2"])
    )
    threads = torch.get_num_threads()
    runner = runner_class(config=build_algorithm_config(experiment), worker_index=1)
    try:
        assert torch.get_num_threads() == 2
        on_gpu = runner_class is HostGPUEnvRunner and torch.cuda.is_available()
        assert next(runner.module.parameters()).device.type == ("cuda" if on_gpu else "cpu")
        episodes = runner.sample(num_timesteps=40)
        assert sum(len(episode) for episode in episodes) >= 40
    finally:
        runner.stop()
        torch.set_num_threads(threads)
