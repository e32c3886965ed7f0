"""Two-stage stop signals, the same for the trainer and the compose launcher.

The first SIGINT/SIGTERM asks for a graceful stop (finish the iteration, checkpoint); a second
one exits at once, quietly, with the shell's code for the signal (130 for SIGINT, 143 for
SIGTERM). Checkpoints are written atomically, so a run stopped either way stays resumable.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    return 128 + signum


class TwoStageStop:
    """Within the block, the first stop signal calls `on_first(name)`; the second calls
    `on_second()` (quick cleanup, such as removing containers) and exits now."""

    def __init__(self, on_first: Callable[[str], None], on_second: Callable[[], None] | None = None) -> None:
        self.on_first = on_first
        self.on_second = on_second
        self.received: str | None = None

    def __enter__(self) -> TwoStageStop:
        # Python delivers signals to the main thread only; a run trained in another thread (a
        # Tune trial's) is stopped by whoever owns that thread.
        main = threading.current_thread() is threading.main_thread()
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS} if main else {}
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received:
            print(f"\n{name} again: exiting now", file=sys.stderr, flush=True)
            if self.on_second:
                self.on_second()
            os._exit(exit_code(signum))  # no cleanup that could hang; the last checkpoint stands
        self.received = name
        self.on_first(name)

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
