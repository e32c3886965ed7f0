"""One run's directory: resolved config, checkpoints, TensorBoard events, rollouts.

    <run>/config.yaml                     the experiment as trained (resume reads it back)
    <run>/events.out.tfevents.*           TensorBoard scalars
    <run>/metrics.jsonl                   the metric line's values, one JSON object per iteration
    <run>/checkpoints/checkpoint_000010/  RLlib algorithm state + trainer_state.json + metrics.jsonl
    <run>/steps_by_host.json              env steps each host sampled (this process's lifetime)
    <run>/stopped.json                    why and where training last stopped cleanly; a run with
                                          checkpoints but without it was interrupted (killed, crashed)
    <run>/.lock                           held (flock) while a process trains the run
    <run>/rollout/                        summary.json and a video, written by `rollout`

`trainer_state.json` carries our own counters (iteration, env steps, wall time), so a resumed
run continues them instead of trusting RLlib's restore, which resets its timestep counters. A
checkpoint keeps metrics.jsonl as it was, and a resume starts from that copy: the file then has one
row per iteration trained into the checkpoint resumed, also where the run directory was lost
(a SageMaker spot restart gets its checkpoints back, not its run directory).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from procgen_rl import envvars
from procgen_rl.config import Experiment, save_experiment
from procgen_rl.errors import CheckpointError, UserError
from procgen_rl.reporting import METRICS_FILE

STATE_FILE = "trainer_state.json"
STOPPED_FILE = "stopped.json"
LOCK_FILE = ".lock"
CHECKPOINT_PREFIX = "checkpoint_"
RLLIB_METADATA = "rllib_checkpoint.json"  # written by RLlib's save_to_path


@dataclass
class TrainState:
    """Counters that survive resume; stop criteria are checked against these."""

    iteration: int = 0
    timesteps_total: int = 0  # env steps sampled
    timesteps_trained: int = 0  # env steps trained on: the step budget's count
    time_total_s: float = 0.0
    episodes_total: int = 0


def results_root() -> Path:
    return Path(os.environ.get(envvars.RESULTS_DIR, "results"))


def new_run_path(experiment_name: str) -> Path:
    return results_root() / f"{experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def interrupted_run(experiment_name: str) -> RunDir | None:
    """The newest run of this experiment in the results directory, if it was interrupted."""
    pattern = re.compile(re.escape(experiment_name) + r"-\d{8}-\d{6}")  # new_run_path's names
    runs = sorted(p for p in results_root().glob(f"{experiment_name}-*") if pattern.fullmatch(p.name))
    newest = RunDir(runs[-1]) if runs else None
    return newest if newest and newest.was_interrupted() else None


class RunDir:
    def __init__(self, path: Path, checkpoints_path: Path | None = None) -> None:
        """`checkpoints_path` defaults to <run>/checkpoints; SageMaker keeps them elsewhere."""
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.checkpoints_path = Path(checkpoints_path) if checkpoints_path else self.path / "checkpoints"
        self.rollout_path = self.path / "rollout"
        self.steps_by_host_path = self.path / "steps_by_host.json"
        self.metrics_path = self.path / METRICS_FILE
        self.stopped_path = self.path / STOPPED_FILE

    def write_config(self, experiment: Experiment) -> None:
        """The resolved experiment, written once by the launcher; every trainer of the run reads it."""
        if self.is_locked():
            raise UserError(f"{self.path} is being trained by another process")
        self.path.mkdir(parents=True, exist_ok=True)
        save_experiment(experiment, self.config_path)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run while training it: a second trainer of the same run fails at once."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{self.path} is being trained by another process") from None
            yield

    def is_locked(self) -> bool:
        try:
            with open(self.path / LOCK_FILE) as handle:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except FileNotFoundError:
            return False
        except BlockingIOError:
            return True
        return False

    def was_interrupted(self) -> bool:
        """Checkpoints, but no clean stop, and nobody training it: killed or crashed mid-run."""
        return bool(self.checkpoints()) and not self.stopped_path.exists() and not self.is_locked()

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a half-written one is never listed)."""
        if not self.checkpoints_path.is_dir():
            return []
        return sorted(
            p
            for p in self.checkpoints_path.glob(f"{CHECKPOINT_PREFIX}[0-9]*")
            if p.is_dir() and (p / STATE_FILE).is_file()
        )

    def rewind_metrics(self, checkpoint: Path | None) -> None:
        """Start metrics.jsonl as the training about to start continues it: the checkpoint's copy,
        or empty for a run trained from scratch (a run that died before its first checkpoint)."""
        if checkpoint is not None and (checkpoint / METRICS_FILE).is_file():
            shutil.copyfile(checkpoint / METRICS_FILE, self.metrics_path)
        elif checkpoint is None:
            self.metrics_path.unlink(missing_ok=True)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(self, save_algorithm: Callable[[str], Any], state: TrainState, keep: int) -> Path:
        """Write a checkpoint atomically (temp dir, then rename) and prune to the newest `keep`."""
        final = self.checkpoints_path / f"{CHECKPOINT_PREFIX}{state.iteration:06d}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        save_algorithm(str(partial.resolve()))
        (partial / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        if self.metrics_path.is_file():
            shutil.copyfile(self.metrics_path, partial / METRICS_FILE)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        if keep > 0:
            for old in self.checkpoints()[:-keep]:
                shutil.rmtree(old)
        return final


def load_state(checkpoint: Path) -> TrainState:
    """Our counters from a checkpoint, after checking it holds an RLlib algorithm state."""
    if not (checkpoint / RLLIB_METADATA).is_file():
        raise CheckpointError(
            f"{checkpoint}: no {RLLIB_METADATA}; not a complete RLlib checkpoint, pick another or start a new run"
        )
    try:
        counters = json.loads((checkpoint / STATE_FILE).read_text())
        counters.setdefault("timesteps_trained", counters.get("timesteps_total", 0))  # written before it was counted
        return TrainState(**counters)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{checkpoint}: unreadable {STATE_FILE} ({err}); pick another checkpoint") from None


def resolve_checkpoint(run_or_checkpoint: str | Path) -> tuple[RunDir, Path]:
    """A run directory (its latest checkpoint) or a checkpoint directory -> (run, checkpoint)."""
    path = Path(run_or_checkpoint)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint directory")
    if (path / STATE_FILE).is_file():
        return RunDir(path.parent.parent), path
    run = RunDir(path)
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise CheckpointError(
            f"{path}: no complete checkpoint in {run.checkpoints_path}; train first, or name a checkpoint_* directory"
        )
    return run, checkpoint
