"""Procgen as one batched gymnasium VectorEnv: all envs step in C++ in one call.

envpool runs the Procgen games with channel-first uint8 frames and resets a finished env on the
*next* step, which is gymnasium's NEXT_STEP autoreset, the mode RLlib's env runner expects.
This wrapper adds what RLlib and the paper need on top, in vectorized numpy:
frame stacking, reward normalization, and the raw (unscaled) return, length and level seed of each
finished episode in `info`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from procgen_rl.config import EnvConfig
from procgen_rl.layout import usable_cpus
from procgen_rl.procgen import DISTRIBUTION_MODES, FRAME_SHAPE, NUM_ACTIONS

ENV_NAME = "procgen_rl"  # the name our env creator is registered under with Ray

# The info keys a finished env reports (gymnasium vector-info form: value array + "_key" mask).
EPISODE_RETURN = "episode_return"
EPISODE_LENGTH = "episode_length"
EPISODE_LEVEL = "episode_level"  # the finished episode's level seed


class RunningMeanStd:
    """Running mean and variance of a scalar stream (Welford, batched), as in OpenAI baselines."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: np.ndarray) -> None:
        batch_mean, batch_var, n = float(x.mean()), float(x.var()), x.size
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total


class ProcgenVectorEnv(gym.vector.VectorEnv):
    """`num_envs` Procgen games of one configuration, stepped together."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        env_config: EnvConfig,
        num_envs: int,
        *,
        seed: int = 0,
        normalize_reward_gamma: float | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.env_config = env_config
        self.num_envs = num_envs
        self._seed = seed
        self._num_threads = num_threads or min(num_envs, usable_cpus())
        self._gamma = normalize_reward_gamma
        channels = FRAME_SHAPE[0] * env_config.frame_stack
        self.single_observation_space: gym.spaces.Box = gym.spaces.Box(0, 255, (channels, *FRAME_SHAPE[1:]), np.uint8)
        self.single_action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._pool: Any = None
        self._frames = np.zeros((num_envs, channels, *FRAME_SHAPE[1:]), np.uint8)
        self._episode_return = np.zeros(num_envs, np.float64)
        self._episode_length = np.zeros(num_envs, np.int64)
        self._needs_reset = np.zeros(num_envs, bool)  # finished last step: this step resets it
        self._discounted_return = np.zeros(num_envs, np.float64)
        self._reward_rms = RunningMeanStd()

    def _make_pool(self, seed: int) -> Any:
        from procgen_rl.quiet import import_gym_quietly

        import_gym_quietly()
        import envpool  # heavy C++ extension: only where envs are really made

        cfg = self.env_config
        return envpool.make(
            f"{cfg.env_name.capitalize()}Easy-v0",
            env_type="gymnasium",
            num_envs=self.num_envs,
            num_threads=self._num_threads,
            seed=seed,
            num_levels=cfg.num_levels,
            start_level=cfg.start_level,
            distribution_mode=DISTRIBUTION_MODES[cfg.distribution_mode],
            use_sequential_levels=cfg.use_sequential_levels,
            center_agent=cfg.center_agent,
            use_backgrounds=cfg.use_backgrounds,
            restrict_themes=cfg.restrict_themes,
            use_monochrome_assets=cfg.use_monochrome_assets,
            paint_vel_info=cfg.paint_vel_info,
            use_generated_assets=cfg.use_generated_assets,
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start every env afresh; a seed rebuilds the pool so that levels and dynamics repeat.

        RLlib seeds env runner w with `seed + w`; envpool seeds env i with `seed + i`, so the
        pool gets `seed * num_envs` and no two envs of a run share a seed.
        """
        if self._pool is None or seed is not None:
            if self._pool is not None:
                self._pool.close()
            self._pool = self._make_pool((self._seed if seed is None else seed) * self.num_envs)
        obs, _ = self._pool.reset()
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._needs_reset[:] = False
        self._discounted_return[:] = 0.0
        self._push_frames(obs, np.ones(self.num_envs, bool))
        return self._frames.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, reward, terminated, truncated, pool_info = self._pool.step(np.asarray(actions, np.int32))
        restarted = self._needs_reset
        reward = np.where(restarted, 0.0, reward)  # NEXT_STEP: this step only reset those envs
        self._episode_return[restarted] = 0.0
        self._episode_length[restarted] = 0
        self._discounted_return[restarted] = 0.0
        self._push_frames(obs, restarted)

        live = ~restarted
        self._episode_return[live] += reward[live]
        self._episode_length[live] += 1
        done = (terminated | truncated) & live
        info: dict[str, Any] = {}
        if done.any():
            info = {
                EPISODE_RETURN: self._episode_return.copy(),
                f"_{EPISODE_RETURN}": done,
                EPISODE_LENGTH: self._episode_length.copy(),
                f"_{EPISODE_LENGTH}": done,
                EPISODE_LEVEL: pool_info["level_seed"].copy(),  # envpool resets next step: still this level's
                f"_{EPISODE_LEVEL}": done,
            }
        self._needs_reset = done
        return (
            self._frames.copy(),
            self._normalize(reward, done).astype(np.float32),
            terminated & live,
            truncated & live,
            info,
        )

    def _normalize(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Divide by the std of the discounted return (baselines' VecNormalize, no mean shift)."""
        if self._gamma is None:
            return reward
        self._discounted_return = self._discounted_return * self._gamma + reward
        self._reward_rms.update(self._discounted_return)
        self._discounted_return[done] = 0.0
        return np.clip(reward / np.sqrt(self._reward_rms.var + 1e-8), -10.0, 10.0)

    def _push_frames(self, obs: np.ndarray, fresh: np.ndarray) -> None:
        """Shift the newest frame into each stack; a fresh episode fills its whole stack."""
        c = FRAME_SHAPE[0]
        if self.env_config.frame_stack > 1:
            self._frames[:, :-c] = self._frames[:, c:]
            self._frames[fresh] = np.tile(obs[fresh], (1, self.env_config.frame_stack, 1, 1))
        self._frames[:, -c:] = obs

    def close(self, **kwargs: Any) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def rllib_env_config(env_config: EnvConfig, gamma: float, normalize_reward: bool) -> dict:
    """The plain dict RLlib ships to each env runner; `make_rllib_env` turns it back into an env."""
    return {"procgen": vars(env_config).copy(), "normalize_reward_gamma": gamma if normalize_reward else None}


def make_rllib_env(ctx: dict) -> ProcgenVectorEnv:
    """Env creator for RLlib's `vector_entry_point` mode: our env config plus `num_envs`.

    Seeding comes later: the env runner calls `reset(seed=config.seed + worker_index)`.
    """
    return ProcgenVectorEnv(
        EnvConfig(**ctx["procgen"]), ctx["num_envs"], normalize_reward_gamma=ctx["normalize_reward_gamma"]
    )
