"""Always-on callback: episode returns in game units, and env steps sampled per host.

The env reports each finished episode's raw return and length in its final `info`; this logs
them on the env runner, and RLlib aggregates them into `result["env_runners"]`. Steps per host
(`result["env_runners"]["steps_by_host"]`) show that every machine of a cluster samples.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from procgen_rl import envvars
from procgen_rl.envs import EPISODE_LENGTH, EPISODE_RETURN
from procgen_rl.reporting import STEPS_BY_HOST

WINDOW = 100  # episodes averaged, as RLlib does for its own episode_return_mean


class EpisodeMetrics(RLlibCallback):
    def on_sample_end(self, *, metrics_logger: Any = None, samples: Any = None, **kwargs: Any) -> None:
        steps = sum(len(episode) for episode in samples)
        host = os.environ.get(envvars.HOST_LABEL) or socket.gethostname()
        metrics_logger.log_value((STEPS_BY_HOST, host), steps, reduce="lifetime_sum")

    def on_episode_end(self, *, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        info = episode.get_infos(-1)
        if EPISODE_RETURN not in info:
            return  # cut off by the end of sampling, not finished by the game
        episode_return = float(info[EPISODE_RETURN])
        metrics_logger.log_value("raw_episode_return_mean", episode_return, reduce="mean", window=WINDOW)
        metrics_logger.log_value("raw_episode_return_min", episode_return, reduce="min", window=WINDOW)
        metrics_logger.log_value("raw_episode_return_max", episode_return, reduce="max", window=WINDOW)
        metrics_logger.log_value("raw_episode_len_mean", int(info[EPISODE_LENGTH]), reduce="mean", window=WINDOW)
        metrics_logger.log_value("raw_episodes", 1, reduce="lifetime_sum")


CALLBACK = EpisodeMetrics
