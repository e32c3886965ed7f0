"""Host-side launchers: they choose where Ray runs and where paths point; training is the same.

    native     this process trains (procgen_rl.trainer)
    compose    a Ray head container trains, worker containers of the same image sample
    sagemaker  SageMaker local mode: the job SageMaker would run, on this machine's Docker
    cloud      a SageMaker training job in AWS (`procgen-rl cloud train`, procgen_rl.launchers.cloud)

Every backend module has `place(job, options) -> Layout` and `launch(job, options, layout) ->
Outcome`. The CLI resolves the experiment once into a `Job`; the backend places the env runners
on its hosts (procgen_rl.layout), the job is checked to build here, and only then does the
layout become the run's first line; the backend then writes the run's config.yaml, which is
what every trainer of the run reads.
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procgen_rl import __version__
from procgen_rl.config import Experiment
from procgen_rl.errors import UserError
from procgen_rl.layout import Layout, check_fits_host
from procgen_rl.run_dir import RunDir, check_writable
from procgen_rl.signals import Stopped

# backend -> (its module here, where it trains)
BACKENDS = {
    "native": ("native", "in this process"),
    "compose": ("compose", "on a compose cluster"),
    "sagemaker": ("sagemaker_local", "as a SageMaker local job"),
}
DEFAULT_IMAGE = f"procgen-rl:{__version__}-cpu"


@dataclass(frozen=True)
class Job:
    """One training run as the user asked for it, resolved and checked."""

    experiment: Experiment  # the YAML with every override applied, validated
    experiment_file: str  # as given: the SageMaker backends name it to the image
    overrides: dict[str, Any]  # the user's explicit --set values, by dotted key
    explicit: frozenset[str]  # the dotted keys the experiment file or the overrides set: a layout keeps them
    run: RunDir | None  # the run on this machine; None for a cloud job (its run lives in S3)
    resume: bool = False
    resume_from: Path | None = None  # the checkpoint of `run` to resume from when not its latest

    @property
    def local_run(self) -> RunDir:
        """The run directory of a backend that trains on this machine."""
        if self.run is None:
            raise ValueError("this job has no local run directory")  # a launcher bug, not user input
        return self.run


@dataclass(frozen=True)
class LaunchOptions:
    """Where the containers come from and how many there are (ignored by native)."""

    image: str = DEFAULT_IMAGE
    workers: int = 2  # compose: worker containers
    worker_cpus: float | None = None  # compose: each worker's CPU limit; None: this machine's CPUs shared
    instances: int = 1  # sagemaker: hosts of the local job


@dataclass(frozen=True)
class Outcome:
    """Where a finished run is, read from its stopped.json: any backend, the same summary."""

    run: RunDir
    stopped: dict[str, Any] = field(default_factory=dict)
    model: Path | None = None  # sagemaker: the job's model directory (a run `rollout` reads)

    @classmethod
    def of(cls, run: RunDir, model: Path | None = None) -> Outcome:
        return cls(run, json.loads(run.stopped_path.read_text()), model)


def resolve_backend(name: str) -> str:
    """`auto`: compose when a Docker engine answers, else native, said in one line."""
    if name != "auto":
        return name
    from procgen_rl.launchers.docker_engine import docker_answers

    if docker_answers():
        return "compose"
    print("no Docker engine answers (docker info): training natively in this process", flush=True)
    return "native"


def check_buildable(experiment: Experiment) -> None:
    """Resolve the algorithm, model and callbacks and sample one frame with the model, here, so a
    launch fails in one line before anything starts or is announced."""
    from procgen_rl.trainer import build_algorithm_config

    build_algorithm_config(experiment)


def launch(backend: str, job: Job, options: LaunchOptions) -> Outcome:
    """Run `job` on `backend`. A run that fails on the user's input or the filesystem, or is
    stopped by a signal, is left resumable or as it was: a new run without a checkpoint is
    removed, a resumed run gets its previous config.yaml back, and checkpoints set aside for a
    resume from an older one come back when it wrote none."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; available: auto, {', '.join(BACKENDS)}")
    module_name, where = BACKENDS[backend]
    module = importlib.import_module(f"procgen_rl.launchers.{module_name}")
    check_fits_host(job.experiment)
    layout: Layout = module.place(job, options)
    check_buildable(job.experiment)
    print(layout.describe(), flush=True)
    run = job.local_run
    check_writable(run.path, "run directory", "choose another --run-dir or RESULTS_DIR")
    print(f"{'resuming' if job.resume else 'training'} {job.experiment.name} {where}: {run.path}", flush=True)
    created = not run.path.exists()
    previous_config = run.config_path.read_text() if job.resume else None
    aside = run.set_aside_after(job.resume_from) if job.resume_from else None
    if aside:
        print(f"resuming from {job.resume_from}: the newer checkpoints moved to {aside}", flush=True)
    try:
        outcome: Outcome = module.launch(job, options, layout)
        return outcome
    except (UserError, Stopped):
        if created and not run.checkpoints():
            shutil.rmtree(run.path, ignore_errors=True)
        if previous_config is not None and run.config_path.read_text() != previous_config:
            run.config_path.write_text(previous_config)
        if aside and job.resume_from and run.latest_checkpoint() == run.checkpoints_path / job.resume_from.name:
            run.put_back(aside)
        raise
