"""The batched Procgen env, for real (envpool), no Ray."""

import dataclasses

import numpy as np
import pytest

from procgen_rl.config import EnvConfig
from procgen_rl.envs import EPISODE_RETURN, ProcgenVectorEnv
from procgen_rl.procgen import GAMES


def rollout_frames(env_config, steps=8, num_envs=4, seed=1, **kwargs):
    env = ProcgenVectorEnv(env_config, num_envs, seed=seed, **kwargs)
    obs, _ = env.reset()
    frames = [obs]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        frames.append(env.step(rng.integers(0, 15, num_envs))[0])
    env.close()
    return np.stack(frames)


@pytest.mark.parametrize("game", GAMES)
def test_every_game_steps_in_one_batch_as_uint8(game):
    env = ProcgenVectorEnv(EnvConfig(env_name=game), num_envs=3)
    obs, _ = env.reset()
    assert obs.shape == (3, 3, 64, 64) and obs.dtype == np.uint8
    obs, reward, terminated, truncated, _ = env.step(np.zeros(3, np.int64))
    assert obs.dtype == np.uint8 and reward.shape == terminated.shape == truncated.shape == (3,)
    assert env.single_observation_space.contains(obs[0])
    env.close()


def test_same_seed_same_frames_and_options_reach_the_game():
    base = EnvConfig(env_name="coinrun")
    reference = rollout_frames(base)
    np.testing.assert_array_equal(reference, rollout_frames(base))
    for option, value in [
        ("use_backgrounds", False),
        ("use_monochrome_assets", True),
        ("center_agent", False),
        ("distribution_mode", "hard"),
        ("start_level", 1000),
        ("paint_vel_info", True),
        ("restrict_themes", True),
        ("use_generated_assets", True),
    ]:
        changed = rollout_frames(dataclasses.replace(base, **{option: value}))
        assert not np.array_equal(reference, changed), f"{option}={value} changed nothing"


def test_sequential_levels_and_num_levels_are_accepted():
    frames = rollout_frames(EnvConfig(env_name="maze", num_levels=1, use_sequential_levels=True))
    assert frames.shape == (9, 4, 3, 64, 64)
    # num_levels=1: every env starts on the same level.
    assert all(np.array_equal(frames[0, 0], frames[0, i]) for i in range(4))


def test_frame_stack_fills_on_reset_and_shifts_on_step():
    env = ProcgenVectorEnv(EnvConfig(env_name="starpilot", frame_stack=4), num_envs=2, seed=3)
    obs, _ = env.reset()
    assert obs.shape == (2, 12, 64, 64)
    np.testing.assert_array_equal(obs[:, 0:3], obs[:, 9:12])  # reset: the stack is 4 copies
    newer, *_ = env.step(np.zeros(2, np.int64))
    np.testing.assert_array_equal(newer[:, 0:9], obs[:, 3:12])  # oldest frame dropped
    env.close()


def play_until_done(env, num_envs, max_steps=3000):
    """Step with random actions until some env finishes; returns per-step rewards and the info."""
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(max_steps):
        _, reward, terminated, truncated, info = env.step(rng.integers(0, 15, num_envs))
        rewards.append(reward)
        if EPISODE_RETURN in info:
            return np.array(rewards), terminated | truncated, info
    raise AssertionError("no episode finished")


def test_next_step_autoreset_reports_raw_return():
    env = ProcgenVectorEnv(EnvConfig(env_name="starpilot"), num_envs=4, seed=5)
    env.reset()
    rewards, done, info = play_until_done(env, 4)
    finished = info[f"_{EPISODE_RETURN}"]
    np.testing.assert_array_equal(finished, done)
    np.testing.assert_allclose(info[EPISODE_RETURN][finished], rewards.sum(0)[finished])
    assert rewards.sum() > 0
    # The next step only resets the finished envs: no reward, not done, a fresh stack.
    _, reward, terminated, truncated, _ = env.step(np.zeros(4, np.int64))
    assert (reward[finished] == 0).all() and not (terminated | truncated)[finished].any()
    env.close()


def test_reward_normalization_scales_rewards_not_reported_returns():
    returns = []
    for gamma in (None, 0.999):
        env = ProcgenVectorEnv(EnvConfig(env_name="starpilot"), num_envs=4, seed=5, normalize_reward_gamma=gamma)
        env.reset()
        rewards, _, info = play_until_done(env, 4)
        returns.append((rewards, info[EPISODE_RETURN][info[f"_{EPISODE_RETURN}"]]))
        env.close()
    (raw, raw_returns), (scaled, scaled_returns) = returns
    np.testing.assert_array_equal(raw_returns, scaled_returns)
    assert raw.sum() > 0 and not np.allclose(raw, scaled)
