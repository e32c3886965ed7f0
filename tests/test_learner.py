"""The PPO learner's minibatching (the paper's update_epochs x num_minibatches steps, real rows only) and loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from conftest import built_learner
from procgen_rl.learner import DropBootstrapFrames, epoch_minibatches, paper_ppo_loss


def test_bootstrap_frames_leave_the_batch_with_their_mask():
    mask = torch.tensor([True, True, False, True, False])
    batch = {
        "default_policy": {Columns.OBS: torch.arange(5), Columns.LOSS_MASK: mask, "nested": {"a": torch.arange(5) * 10}}
    }
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
    batch = MultiAgentBatch(
        {"default_policy": SampleBatch({Columns.OBS: torch.arange(rows), Columns.ACTIONS: torch.arange(rows) * 2})},
        rows,
    )
    minibatches = list(epoch_minibatches(batch, num_epochs=3, num_minibatches=4))
    assert len(minibatches) == 12
    epochs = [
        torch.cat([m.policy_batches["default_policy"][Columns.OBS] for m in minibatches[i : i + 4]]) for i in (0, 4, 8)
    ]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(rows))  # every row once per epoch
    assert epochs[0].tolist() != list(range(rows))  # shuffled from the first epoch on
    sizes = {len(m.policy_batches["default_policy"]) for m in minibatches}
    assert max(sizes) - min(sizes) <= 1 and sum(m.env_steps() for m in minibatches[:4]) == rows
    first = minibatches[0].policy_batches["default_policy"]
    assert (first[Columns.ACTIONS] == first[Columns.OBS] * 2).all()  # columns stay aligned


def loss_of(value, old_value, target, logp_ratio=(1.0, 1.0), advantages=(1.0, -1.0)):
    return paper_ppo_loss(
        logp_ratio=torch.tensor(logp_ratio),
        advantages=torch.tensor(advantages),
        entropy=torch.tensor([0.5, 1.5]),
        value=torch.tensor(value),
        old_value=torch.tensor(old_value),
        target=torch.tensor(target),
        clip_coef=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
    )


def test_value_loss_takes_the_larger_of_the_new_and_the_clipped_error():
    # Row 0 moved 1.0 towards its target, 0.2 once clipped: the clipped error (0.8^2) counts.
    # Row 1 moved away from its target: the new value's error (0.5^2) is the larger one.
    losses = loss_of(value=[1.0, -0.5], old_value=[0.0, 0.0], target=[1.0, 0.0])
    assert losses["vf_loss"].item() == pytest.approx(0.5 * (0.8**2 + 0.5**2) / 2)


def test_surrogate_clips_the_ratio_on_standardized_advantages_and_the_loss_adds_up():
    # Advantages (3, 1) standardize to (1, -1); both ratios are 1.5. Row 0 (A > 0) gains only up
    # to the clipped 1.2; row 1 (A < 0) pays the unclipped 1.5: the pessimistic side each time.
    losses = loss_of(
        value=[0.0, 0.0], old_value=[0.0, 0.0], target=[0.0, 0.0], logp_ratio=(1.5, 1.5), advantages=(3.0, 1.0)
    )
    assert losses["policy_loss"].item() == pytest.approx(-(1.2 * 1.0 + 1.5 * -1.0) / 2)
    assert losses["entropy"].item() == pytest.approx(1.0)
    expected = losses["policy_loss"] - 0.01 * losses["entropy"] + 0.5 * losses["vf_loss"]
    assert losses["loss"].item() == pytest.approx(expected.item())


@pytest.mark.slow
def test_a_ppo_iteration_takes_exactly_epochs_times_minibatches_steps_on_real_rows():
    import ray

    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.trainer import build_algorithm_config, init_ray

    experiment = load_experiment(
        "experiments/smoke.yaml", parse_set_args(["algorithm.update_epochs=2", "algorithm.num_minibatches=4"])
    )
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


def smoke_learner(overrides: list[str]):
    """The learner of experiments/smoke.yaml with `overrides`, built here (no Ray)."""
    from procgen_rl.config import load_experiment, parse_set_args

    return built_learner(load_experiment("experiments/smoke.yaml", parse_set_args(overrides)))


def test_the_learners_adam_has_the_papers_epsilon_and_the_experiments_learning_rate():
    from procgen_rl.learner import ADAM_EPSILON

    learner = smoke_learner(["algorithm.learning_rate=0.0003"])
    ((_, optimizer),) = learner.get_optimizers_for_module("default_policy")
    assert ADAM_EPSILON == 1e-5
    assert [(group["eps"], group["lr"]) for group in optimizer.param_groups] == [(1e-5, 0.0003)]


@pytest.mark.parametrize("algorithm", ["PPO", "APPO"])
def test_a_seeded_learner_stays_deterministic_without_the_nan_fill(algorithm):
    """RLlib's seeding turns on deterministic torch on a CPU build, whose NaN fill writes every new
    tensor once more; the harness's learners keep the first and drop the second."""
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        smoke_learner([f"algorithm.name={algorithm}"])
        assert torch.are_deterministic_algorithms_enabled() == (torch.version.cuda is None)
        assert not torch.utils.deterministic.fill_uninitialized_memory
    finally:
        torch.use_deterministic_algorithms(False)
        torch.utils.deterministic.fill_uninitialized_memory = True
