"""A callback that prints the driver's thread for sampling and for evaluation: with no remote env
runner, the driver's local one samples on the thread the iteration trains on
(tests/test_training.py)."""

from __future__ import annotations

import threading
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback


class Threads(RLlibCallback):
    def on_sample_end(self, *, env_runner: Any = None, **kwargs: Any) -> None:
        if env_runner is not None and env_runner.worker_index == 0:
            print(f"[thread] sampling on {threading.current_thread().name}", flush=True)

    def on_evaluate_start(self, *, algorithm: Any, **kwargs: Any) -> None:
        print(f"[thread] evaluating on {threading.current_thread().name}", flush=True)
