"""The PPO learner's minibatching: the paper's update_epochs x num_minibatches steps, real rows only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from procgen_rl.learner import DropBootstrapFrames, epoch_minibatches


def test_bootstrap_frames_leave_the_batch_with_their_mask():
    mask = torch.tensor([True, True, False, True, False])
    batch = {"default_policy": {Columns.OBS: torch.arange(5), Columns.LOSS_MASK: mask,
                                "nested": {"a": torch.arange(5) * 10}}}
    out = DropBootstrapFrames()(batch=batch, rl_module=None, episodes=[])["default_policy"]
    assert Columns.LOSS_MASK not in out
    assert out[Columns.OBS].tolist() == [0, 1, 3]
    assert out["nested"]["a"].tolist() == [0, 10, 30]


def test_a_batch_without_mask_is_left_alone():
    batch = {"default_policy": {Columns.OBS: torch.arange(3)}}
    assert DropBootstrapFrames()(batch=batch)["default_policy"][Columns.OBS].tolist() == [0, 1, 2]


@pytest.mark.parametrize("rows", [16, 19])
def test_each_epoch_is_a_permutation_in_near_equal_minibatches(rows):
    np.random.seed(0)
    batch = MultiAgentBatch({"default_policy": SampleBatch({Columns.OBS: torch.arange(rows),
                                                             Columns.ACTIONS: torch.arange(rows) * 2})}, rows)
    minibatches = list(epoch_minibatches(batch, num_epochs=3, num_minibatches=4))
    assert len(minibatches) == 12
    epochs = [torch.cat([m.policy_batches["default_policy"][Columns.OBS] for m in minibatches[i:i + 4]])
              for i in (0, 4, 8)]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(rows))  # every row once per epoch
    assert epochs[0].tolist() != list(range(rows))  # shuffled from the first epoch on
    sizes = {len(m.policy_batches["default_policy"]) for m in minibatches}
    assert max(sizes) - min(sizes) <= 1 and sum(m.env_steps() for m in minibatches[:4]) == rows
    first = minibatches[0].policy_batches["default_policy"]
    assert (first[Columns.ACTIONS] == first[Columns.OBS] * 2).all()  # columns stay aligned


@pytest.mark.slow
def test_a_ppo_iteration_takes_exactly_epochs_times_minibatches_steps_on_real_rows():
    import ray

    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.trainer import build_algorithm_config, init_ray

    experiment = load_experiment("experiments/smoke.yaml", parse_set_args(
        ["algorithm.update_epochs=2", "algorithm.num_minibatches=4"]))
    init_ray(experiment)
    try:
        algo = build_algorithm_config(experiment).build_algo()
        learner, seen = algo.learner_group._learner, []
        update = learner._update

        def spy(batch):
            seen.append(batch["default_policy"])
            return update(batch)

        learner._update = spy
        sampled = algo.train()["env_runners"]["num_env_steps_sampled"]
        algo.stop()
    finally:
        ray.shutdown()
    assert len(seen) == 2 * 4
    assert sum(len(b) for b in seen) == 2 * sampled  # each sampled transition once per epoch, nothing else
    assert all(Columns.LOSS_MASK not in b for b in seen)
