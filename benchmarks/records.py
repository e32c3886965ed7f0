"""Benchmark records: one JSON file per measurement in benchmarks/records/.

The tables of docs/performance.md and docs/learning.md are rendered from these files by
scripts/render_docs.py, so every figure there names the date, commit, hardware and exact command
it was measured with. A newer record of the same measurement on the same hardware class
replaces a record on the page; a record whose figures no longer describe the code, and that
cannot be measured again, gets a `superseded` reason and leaves the page. Nothing else in a
record is edited.

    kind         bench | learning | train | env_runner | cluster (the script that measured)
    measurement  what was measured: experiment, sorted --set overrides, and per kind a few
                 keys (learning: steps and implementation; cluster: workers)
    date         UTC, ISO 8601
    commit       `git rev-parse HEAD`; dirty is true when the work tree had changes
    hardware     cpu (model name), cores, memory_gib, gpus (one name per GPU)
    software     python and the versions of torch, ray and envpool
    command      the exact command line, with the environment variables that change timings
    figures      the numbers, named per kind
    context      optional: how it ran (load, the split of an iteration), kept with the record only
    note         optional: what a reader must know to use the figures, shown under the table
    superseded   optional: why a figure no longer describes the code (it then leaves the page)
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

RECORDS = Path(__file__).resolve().parent / "records"
REPO = RECORDS.parent.parent
TIMING_ENV = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")  # recorded in the command when set
SOFTWARE = ("torch", "ray", "envpool")


def measurement(experiment: str, overrides: list[str], **extra: Any) -> dict[str, Any]:
    """What a record measured; `overrides` are sorted so that their order does not split a measurement."""
    return {"experiment": os.path.relpath(Path(experiment).resolve(), REPO), "overrides": sorted(overrides), **extra}


def hardware() -> dict[str, Any]:
    """This machine: CPU model, cores, memory and GPUs (by nvidia-smi, so no CUDA import is needed)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=True
        ).stdout
        gpus = [name.strip() for name in smi.splitlines() if name.strip()]
    except (OSError, subprocess.CalledProcessError):
        gpus = []
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_gib), "gpus": gpus}


def software() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in SOFTWARE:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> tuple[str, bool]:
    """HEAD and whether the work tree differs from it; ("unknown", True) outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def command_line() -> str:
    """This process's command as a user would type it again, from the repository root."""
    env = [f"{name}={os.environ[name]}" for name in TIMING_ENV if name in os.environ]
    return shlex.join([*env, "python", *sys.argv])


def write(kind: str, what: dict[str, Any], figures: dict[str, Any], note: str | None = None) -> Path:
    """Write one record into RECORDS and return its path."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    commit, dirty = git_commit()
    record = {
        "kind": kind,
        "measurement": what,
        "date": now.isoformat().replace("+00:00", "Z"),
        "commit": commit,
        "dirty": dirty,
        "hardware": hardware(),
        "software": software(),
        "command": command_line(),
        "figures": figures,
    }
    if note:
        record["note"] = note
    label = "-".join(
        str(part)
        for part in (Path(what["experiment"]).stem, what.get("implementation"), what.get("workers"))
        if part is not None
    )
    stem = f"{now:%Y-%m-%d-%H%M%S}-{kind}-{re.sub(r'[^a-z0-9-]+', '-', label.lower())}"
    RECORDS.mkdir(exist_ok=True)
    path, n = RECORDS / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = RECORDS / f"{stem}-{n}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {os.path.relpath(path)}", flush=True)
    return path


def read_learning(path: Path) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """A learning record's measurement and curve (env steps, mean return), as benchmarks/learning.py
    recorded the run; one line naming the file for anything else, older learning records included."""
    try:
        record = json.loads(path.read_text())
        measurement, curve = record["measurement"], record["figures"]["curve"]
        points = [(int(step), float(mean_return)) for step, mean_return in curve]
        learning = record["kind"] == "learning" and isinstance(measurement, dict) and bool(points)
    except OSError as e:
        raise SystemExit(f"error: {path}: {e.strerror}") from None
    except (ValueError, TypeError, KeyError):
        learning = False
    if not learning:
        raise SystemExit(f"error: {path}: not a learning record with a curve (older records have none)")
    return measurement, points
