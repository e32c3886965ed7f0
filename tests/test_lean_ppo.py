"""The lean PPO's GAE against hand-computed values (no Ray, no env)."""

import numpy as np
import pytest

from lean_ppo import gae

GAMMA, LAM = 0.9, 0.5


def one_env(*columns):
    return [np.array(c, dtype=np.float32 if i < 2 else bool)[:, None] for i, c in enumerate(columns)]


def test_no_episode_end_bootstraps_from_next_value():
    rewards, values, terminated, truncated = one_env([1.0, 2.0], [0.5, 0.25], [0, 0], [0, 0])
    adv = gae(rewards, values, np.array([4.0]), terminated, truncated, GAMMA, LAM)
    a1 = 2.0 + GAMMA * 4.0 - 0.25
    a0 = 1.0 + GAMMA * 0.25 - 0.5 + GAMMA * LAM * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1], rtol=1e-6)


def test_lambda_one_is_discounted_return_minus_value():
    rewards, values, terminated, truncated = one_env([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0, 0, 0], [0, 0, 0])
    adv = gae(rewards, values, np.array([5.0]), terminated, truncated, GAMMA, 1.0)
    expected = [
        1 + GAMMA * 2 + GAMMA**2 * 3 + GAMMA**3 * 5 - 0.1,
        2 + GAMMA * 3 + GAMMA**2 * 5 - 0.2,
        3 + GAMMA * 5 - 0.3,
    ]
    np.testing.assert_allclose(adv[:, 0], expected, rtol=1e-6)


def test_termination_drops_the_bootstrap_and_cuts_the_trace():
    # step 1 terminates; step 2 is the reset step (its obs_2 is the final frame, V = 7).
    rewards, values, terminated, truncated = one_env([1.0, 2.0, 0.0], [0.5, 0.25, 7.0], [0, 1, 0], [0, 0, 0])
    adv = gae(rewards, values, np.array([3.0]), terminated, truncated, GAMMA, LAM)
    a2 = 0.0 + GAMMA * 3.0 - 7.0
    a1 = 2.0 - 0.25
    a0 = 1.0 + GAMMA * 0.25 - 0.5 + GAMMA * LAM * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)


def test_truncation_bootstraps_from_the_final_frame_and_cuts_the_trace():
    rewards, values, terminated, truncated = one_env([1.0, 2.0, 0.0], [0.5, 0.25, 7.0], [0, 0, 0], [0, 1, 0])
    adv = gae(rewards, values, np.array([3.0]), terminated, truncated, GAMMA, LAM)
    a2 = 0.0 + GAMMA * 3.0 - 7.0
    a1 = 2.0 + GAMMA * 7.0 - 0.25  # V(final frame) bootstraps; the reset step's a2 does not flow in
    a0 = 1.0 + GAMMA * 0.25 - 0.5 + GAMMA * LAM * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)


def test_envs_are_independent_columns():
    rewards = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
    values = np.zeros((2, 2), np.float32)
    terminated = np.array([[False, True], [False, False]])
    truncated = np.zeros((2, 2), bool)
    adv = gae(rewards, values, np.zeros(2, np.float32), terminated, truncated, GAMMA, LAM)
    np.testing.assert_allclose(adv, [[1.0 + GAMMA * LAM, 0.0], [1.0, 1.0]], rtol=1e-6)  # env 1's end cuts only env 1
    assert adv.dtype == np.float32


@pytest.mark.parametrize("lam", [0.0, 0.95])
def test_shape_follows_the_rollout(lam):
    rewards = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    adv = gae(
        rewards,
        np.zeros_like(rewards),
        np.zeros(3, np.float32),
        np.zeros((5, 3), bool),
        np.zeros((5, 3), bool),
        GAMMA,
        lam,
    )
    assert adv.shape == (5, 3)
    if lam == 0.0:
        np.testing.assert_allclose(adv, rewards, rtol=1e-6)
