"""One run's directory: resolved config, checkpoints, TensorBoard events, rollouts.

    <run>/config.yaml                     the experiment as trained (resume reads it back)
    <run>/events.out.tfevents.*           TensorBoard scalars
    <run>/metrics.jsonl                   the metric line's values, one JSON object per iteration
    <run>/checkpoints/checkpoint_000010/  RLlib algorithm state + trainer_state.json + metrics.jsonl
    <run>/steps_by_host.json              env steps each host sampled (this process's lifetime)
    <run>/stopped.json                    why and where training last stopped cleanly; a run with
                                          checkpoints but without it was interrupted (killed, crashed)
    <run>/.lock                           held (flock) while a process trains the run, then removed
    <run>/rollout/                        summary.json and a video, written by `rollout`
    <run>/checkpoints/superseded-<time>/  checkpoints newer than the one a resume started from

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
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from procgen_rl import envvars
from procgen_rl.config import Experiment, save_experiment
from procgen_rl.errors import CheckpointError, FilesystemError, UserError
from procgen_rl.reporting import METRICS_FILE

STATE_FILE = "trainer_state.json"
STOPPED_FILE = "stopped.json"
LOCK_FILE = ".lock"
CHECKPOINT_PREFIX = "checkpoint_"
CHECKPOINT_NAME = re.compile(re.escape(CHECKPOINT_PREFIX) + r"\d+")  # not .partial, not set aside
SUPERSEDED_PREFIX = "superseded-"
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
    return Path(os.environ.get(envvars.RESULTS_DIR) or "results")


def problem(err: OSError) -> str:
    """An OSError's cause in words ("no space left on device"); pyarrow's carry only errno."""
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def in_the_way(path: Path) -> str | None:
    """What keeps `path` from being a directory: a file, a dangling link or a link loop on the way."""
    for part in (*reversed(path.parents), path):
        which = "it" if part == path else str(part)
        try:
            if not stat.S_ISDIR(os.stat(part).st_mode):
                return f"{which} is not a directory"
        except FileNotFoundError:
            return f"{which} is a symbolic link to nothing" if part.is_symlink() else None
        except OSError as err:
            return problem(err) if part == path else f"{part}: {problem(err)}"
    return None


def check_writable(path: Path, what: str, advice: str) -> None:
    """Prove that `path` can be a directory this process writes to, by creating it and writing a
    byte there, then leave it as it was: a path the filesystem refuses (read-only, full, a file
    on the way, /proc) fails in one line before anything starts."""
    obstacle = in_the_way(path)
    if obstacle:
        raise FilesystemError(f"{what} {path}: {obstacle}; {advice}")
    missing = [p for p in (path, *path.parents) if not p.exists()]
    doing = "create it"
    try:
        path.mkdir(parents=True, exist_ok=True)
        doing = "write to it"
        with tempfile.TemporaryFile(dir=path) as probe:
            probe.write(b"\0")
            probe.flush()  # a full disk refuses the first byte
    except OSError as err:
        raise FilesystemError(f"{what} {path}: cannot {doing} ({problem(err)}); {advice}") from None
    finally:
        for created in missing:  # deepest first; one another process has put something in stays
            with suppress(OSError):
                created.rmdir()


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """An OSError while writing `what` under `path` becomes one line naming the file and the problem."""
    try:
        yield
    except OSError as err:
        raise FilesystemError(f"{err.filename or path}: cannot write {what} ({problem(err)})") from None


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
        """The resolved experiment, written once by the launcher; every trainer of the run reads it.
        Written beside and renamed, so a full disk leaves the previous config.yaml whole."""
        if self.is_locked():
            raise UserError(f"{self.path} is being trained by another process")
        partial = self.config_path.with_name(self.config_path.name + ".partial")
        with writing(self.path, "the run's config"):
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                save_experiment(experiment, partial)
                partial.replace(self.config_path)
            finally:
                partial.unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run while training it: a second trainer of the same run fails at once.

        The lock file is removed on release, so a finished run (and a SageMaker job's
        output.tar.gz) holds none. A trainer that opened the file just before its holder removed
        it would lock a file nobody else sees: it checks that the path still names the file it
        locked, and otherwise locks the new one.
        """
        path = self.path / LOCK_FILE
        with writing(self.path, "the run's lock file"):
            self.path.mkdir(parents=True, exist_ok=True)
            while True:
                handle = open(path, "a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    raise UserError(f"{self.path} is being trained by another process") from None
                if _same_file(path, handle.fileno()):
                    break
                handle.close()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # while still held: nobody can lock the removed file in between
            handle.close()

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
            if CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir() and (p / STATE_FILE).is_file()
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
        """Write a checkpoint atomically (temp dir, then rename) and prune to the newest `keep`.

        A write that fails (a full disk) removes what it wrote, so the space comes back and the
        previous checkpoint stays the latest.
        """
        final = self.checkpoints_path / f"{CHECKPOINT_PREFIX}{state.iteration:06d}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            save_algorithm(str(partial.resolve()))
            (partial / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
            if self.metrics_path.is_file():
                shutil.copyfile(self.metrics_path, partial / METRICS_FILE)
        except OSError as err:
            shutil.rmtree(partial, ignore_errors=True)
            latest = self.latest_checkpoint()
            kept = (
                f"{latest} is still the latest: free space, then `procgen-rl train --resume {self.path}`"
                if latest
                else "no checkpoint was written"
            )
            raise FilesystemError(f"{partial}: cannot write the checkpoint ({problem(err)}); {kept}") from None
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        if keep > 0:
            for old in self.checkpoints()[:-keep]:
                shutil.rmtree(old)
        return final

    def set_aside_after(self, checkpoint: Path) -> Path | None:
        """Move the checkpoints newer than `checkpoint` into checkpoints/superseded-<time>/, so a run
        resumed from it writes its new checkpoints into one history; None when there were none."""
        newer = [p for p in self.checkpoints() if p.name > checkpoint.name]
        if not newer:
            return None
        aside = self.checkpoints_path / f"{SUPERSEDED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
        with writing(self.checkpoints_path, "superseded checkpoints"):
            aside.mkdir()
            for path in newer:
                path.rename(aside / path.name)
        return aside

    def put_back(self, aside: Path) -> None:
        """Undo `set_aside_after` when the resume wrote no checkpoint of its own."""
        for path in sorted(aside.iterdir()):
            path.rename(self.checkpoints_path / path.name)
        aside.rmdir()


def _same_file(path: Path, fd: int) -> bool:
    try:
        named, opened = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


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


def is_checkpoint(path: Path) -> bool:
    """A checkpoint_* directory (complete or not), as opposed to a run directory."""
    return path.name.startswith(CHECKPOINT_PREFIX) or (path / STATE_FILE).is_file()


def resolve_checkpoint(run_or_checkpoint: str | Path) -> tuple[RunDir, Path]:
    """A run directory (its latest checkpoint) or a checkpoint directory -> (run, checkpoint)."""
    path = Path(run_or_checkpoint)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory; name a run directory or a checkpoint_* directory")
    if is_checkpoint(path):
        if not CHECKPOINT_NAME.fullmatch(path.name) or not (path / STATE_FILE).is_file():
            raise CheckpointError(
                f"{path}: not a complete checkpoint (a complete one is named {CHECKPOINT_PREFIX}<iteration> "
                f"and holds {STATE_FILE}); name another, or the run directory for its latest"
            )
        return RunDir(path.absolute().parent.parent), path
    run = RunDir(path)
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise CheckpointError(
            f"{path}: no complete checkpoint in {run.checkpoints_path}; train first, or name a checkpoint_* directory"
        )
    return run, checkpoint
