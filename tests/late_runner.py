"""A callback that makes env runner 2 return its first fragment just after RLlib's default
`sample_timeout_s` (as a runner warming up under CPU load does): tests/test_step_counts.py."""

from __future__ import annotations

import time
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.callbacks.callbacks import RLlibCallback

LATE_S = AlgorithmConfig().sample_timeout_s + 1


class LateFirstFragment(RLlibCallback):
    late = False

    def on_sample_end(self, *, env_runner: Any = None, **kwargs: Any) -> None:
        if env_runner is not None and env_runner.worker_index == 2 and not self.late:
            self.late = True
            time.sleep(LATE_S)
