"""Progress inside one training iteration: env steps sampled so far and the learner's phase.

A PPO iteration of the paper's size takes minutes on a laptop CPU; without this the user sees
nothing until it ends. Env runners and learners report to a small named Ray actor (the board),
at most every REPORT_EVERY_S and never waiting for an answer; the driver's heartbeat thread reads
it and prints a `[progress]` line every HEARTBEAT_S while an iteration runs. Short iterations
print none.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray

BOARD_NAME = "procgen_rl_progress"
REPORT_EVERY_S = 5.0
HEARTBEAT_S = 15.0


@ray.remote(num_cpus=0)
class ProgressBoard:
    """This iteration's counts, as the runners and learners last reported them."""

    def __init__(self) -> None:
        self.steps, self.phase = 0, ""

    def add_steps(self, steps: int) -> None:
        self.steps += steps

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def start_iteration(self) -> None:
        self.steps, self.phase = 0, ""

    def read(self) -> tuple[int, str]:
        return self.steps, self.phase


class ProgressReporter:
    """What a runner or learner uses: throttled, fire-and-forget; silent where there is no board."""

    def __init__(self) -> None:
        self._board: Any = None
        self._looked_up = False
        self._steps = 0
        self._last = time.monotonic()

    def _due(self, force: bool = False) -> Any:
        """The board when a report is due (or forced), else None."""
        if not force and time.monotonic() - self._last < REPORT_EVERY_S:
            return None
        self._last = time.monotonic()
        if not self._looked_up:
            self._looked_up = True
            try:  # without Ray (a learner built in a test), no board: looking one up would start Ray
                self._board = ray.get_actor(BOARD_NAME) if ray.is_initialized() else None
            except ValueError:  # no board: a test or a benchmark outside the trainer
                self._board = None
        return self._board

    def steps(self, count: int, flush: bool = False) -> None:
        """Count `count` more env steps; `flush` sends them now (the end of a fragment)."""
        self._steps += count
        board = self._due(force=flush and self._steps > 0)
        if board is not None:
            board.add_steps.remote(self._steps)
            self._steps = 0

    def phase(self, text: str) -> None:
        board = self._due()
        if board is not None:
            board.set_phase.remote(text)


class Heartbeat:
    """The driver side: a daemon thread printing the board while an iteration runs long."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.iteration, self.started = 0, time.monotonic()
        self._stop = threading.Event()
        self._board = ProgressBoard.options(name=BOARD_NAME, get_if_exists=True).remote()  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._run, name="procgen-rl-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def start_iteration(self, iteration: int) -> None:
        self.iteration, self.started = iteration, time.monotonic()
        self._board.start_iteration.remote()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            elapsed = time.monotonic() - self.started
            if elapsed < HEARTBEAT_S:
                continue
            try:
                steps, phase = ray.get(self._board.read.remote(), timeout=HEARTBEAT_S)
            except Exception:  # the cluster is going down: the trainer reports that, not the heartbeat
                continue
            print(
                f"[progress] iteration {self.iteration}: {steps:,} of {self.batch_size:,} env steps sampled"
                f"{', ' + phase if phase else ''} ({elapsed:.0f} s)",
                flush=True,
            )

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S)
