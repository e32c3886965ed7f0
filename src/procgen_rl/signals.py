"""Two-stage stop signals, the same for the CLI, the trainer and the compose launcher.

The first SIGINT/SIGTERM asks for a graceful stop (finish the iteration, checkpoint) where one is
armed, and elsewhere (loading an experiment, a rollout) stops at once by raising `Stopped`, which
unwinds like KeyboardInterrupt: locks are released and a new run's directory is removed. While
Ray's driver starts, the trainer raises it itself between Ray's calls (`stop_if_received`). A second signal exits
at once. Either way the exit is quiet, with the shell's code for the signal (130 for SIGINT, 143
for SIGTERM). Checkpoints are written atomically, so a run stopped any way stays resumable.
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


class Stopped(BaseException):
    """A stop signal with nothing to finish gracefully; the CLI exits with `exit_code(signum)`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TwoStageStop:
    """Within the block, the first stop signal calls `on_first(name)`, or raises `Stopped` when
    there is none; the second calls `on_second()` (quick cleanup, such as removing containers)
    and exits now. Once a signal came, the handler stays after the block: the next one still
    exits at once, also while the process winds down.

    Python drops an exception raised where a signal lands in an at-fork hook or a finalizer, so
    a `Stopped` can be lost: it is dropped quietly, and a block entered inside one whose signal
    came raises it again.
    """

    def __init__(
        self, on_first: Callable[[str], None] | None = None, on_second: Callable[[], None] | None = None
    ) -> None:
        self.on_first = on_first
        self.on_second = on_second
        self.received: str | None = None

    def __enter__(self) -> TwoStageStop:
        # Python delivers signals to the main thread only; a run trained in another thread (a
        # Tune trial's) is stopped by whoever owns that thread.
        self._previous: dict[int, Any] = {}
        self._previous_hook = sys.unraisablehook
        if threading.current_thread() is not threading.main_thread():
            return self
        outer = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
        if isinstance(outer, TwoStageStop) and outer.received:
            raise Stopped(signal.Signals[outer.received])
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        sys.unraisablehook = self._unraisable
        return self

    def _unraisable(self, unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, Stopped):  # not "Exception ignored in ...: Stopped"
            self._previous_hook(unraisable)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received:
            print(f"\n{name} again: exiting now", file=sys.stderr, flush=True)
            if self.on_second:
                self.on_second()
            os._exit(exit_code(signum))  # no cleanup that could hang; the last checkpoint stands
        self.received = name
        if self.on_first is None:
            print(f"\n{name}: stopping", file=sys.stderr, flush=True)
            raise Stopped(signum)
        self.on_first(name)

    def stop_if_received(self) -> None:
        """Raise `Stopped` here, at a safe point, when a signal came within the block."""
        if self.received:
            raise Stopped(signal.Signals[self.received])

    def __exit__(self, *exc: Any) -> None:
        if self.received:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = self._previous_hook
