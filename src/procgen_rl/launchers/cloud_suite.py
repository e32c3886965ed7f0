"""`procgen-rl cloud benchmark`: a suite's cells as SageMaker training jobs, a few at a time.

Each cell is one job started by the cloud launcher (`cloud.launch`: the image, spot, checkpoints
in S3, as `cloud train`), with the cell's overrides as its hyperparameters and the suite and cell
as tags. The image is pushed once. At most `max_concurrent` jobs run at once; each is followed
(DescribeTrainingJob every `poll_s`) until all have ended. <suite dir>/jobs.json names each
cell's job and run, written as jobs start: a rerun of the directory follows the jobs still
running, skips completed ones and starts a new job for a cell whose job failed or was stopped;
`procgen-rl report` fetches each cell's run from S3 into <suite dir>/<cell>/run/.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

from procgen_rl.config import read_experiment
from procgen_rl.errors import UserError
from procgen_rl.launchers import Job, cloud
from procgen_rl.runtime.sagemaker import decode_hyperparameter
from procgen_rl.suite import Cell, Suite, check_directory, save

JOBS_FILE = "jobs.json"
ENDED = ("Completed", "Failed", "Stopped")
STAMP_LENGTH = 15  # %Y%m%d-%H%M%S


def job_name(suite: Suite, index: int, cell: str) -> str:
    """<suite>-<index>-<cell>-<UTC time>, cut to SageMaker's 63 characters; the index keeps names
    that the cut makes alike apart."""
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", f"{suite.name}-{index}-{cell}")[: 62 - STAMP_LENGTH].strip("-")
    return cloud.check_job_name(f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")


def read_jobs(directory: Path) -> dict[str, dict[str, str]]:
    path = directory / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_jobs(directory: Path, jobs: dict[str, dict[str, str]]) -> None:
    (directory / JOBS_FILE).write_text(json.dumps(jobs, indent=2) + "\n")


def status(sagemaker: Any, job: str) -> tuple[str, str]:
    """The job's status and, when it failed, SageMaker's reason."""
    described = sagemaker.describe_training_job(TrainingJobName=job)
    return described["TrainingJobStatus"], described.get("FailureReason", "")


def cell_job(suite: Suite, cell: Cell) -> Job:
    """A cell as a cloud job: the suite's experiment with the cell's overrides, checked here."""
    overrides = suite.overrides(cell)
    experiment, explicit = read_experiment(suite.experiment, overrides, f"{suite.source}: cell {cell.name}:")
    return Job(experiment, suite.experiment, overrides, explicit, run=None)


def run(
    suite: Suite, directory: Path, options: cloud.CloudOptions, max_concurrent: int, poll_s: float
) -> dict[str, str]:
    """Start and follow the suite's jobs until every cell's has ended; return each cell's status."""
    if max_concurrent < 1:
        raise UserError(f"--max-concurrent must be >= 1, got {max_concurrent}")
    note = check_directory(suite, directory)
    cells = suite.cells()
    jobs_of = {cell.name: cell_job(suite, cell) for cell in cells}
    session = cloud.aws_session(options.region, options.profile)
    sagemaker = session.client("sagemaker")
    jobs = read_jobs(directory)
    statuses: dict[str, str] = {}
    with cloud.aws_errors():
        for cell, job in jobs.items():
            statuses[cell] = status(sagemaker, job["job"])[0]
    running = {cell: jobs[cell]["job"] for cell, state in statuses.items() if state not in ENDED}
    pending = deque(cell.name for cell in cells if statuses.get(cell.name) in (None, "Failed", "Stopped"))
    done = len(cells) - len(running) - len(pending)
    print(
        f"suite {suite.name}: {len(cells)} cells in {directory}: {done} completed, {len(running)} running, "
        f"{len(pending)} to start (at most {max_concurrent} at once)",
        flush=True,
    )
    if note:
        print(note, flush=True)
    if not pending and not running:
        return statuses
    image = options.image_uri or cloud.publish_image(session, options, cloud.image_variant(options.groups))
    if options.dry_run:
        for index, cell in enumerate(pending):
            named = dataclasses.replace(options, name=job_name(suite, index, cell), image_uri=image)
            request = cloud.launch(jobs_of[cell], named).request
            hyperparameters = {key: decode_hyperparameter(value) for key, value in request["HyperParameters"].items()}
            print(f"{cell}: {request['TrainingJobName']} {json.dumps(hyperparameters)}")
        return {cell: "dry run" for cell in pending}
    index = len(jobs)
    while pending or running:
        while pending and len(running) < max_concurrent:
            cell = pending.popleft()
            if cell in jobs:
                print(f"{cell}: its job {jobs[cell]['job']} {statuses[cell].lower()}; starting a new one", flush=True)
            named = dataclasses.replace(
                options,
                name=job_name(suite, index, cell),
                tags={**options.tags, "suite": suite.name, "cell": cell},
                image_uri=image,
                wait=False,
            )
            index += 1
            spec = cloud.launch(jobs_of[cell], named).spec
            jobs[cell] = {"job": spec.name, "run": spec.run_uri}
            save(suite, directory)  # the directory holds this suite once a job of it runs
            write_jobs(directory, jobs)
            running[cell] = spec.name
        time.sleep(poll_s)
        with cloud.aws_errors():
            for cell, name in list(running.items()):
                state, reason = status(sagemaker, name)
                if state in ENDED:
                    del running[cell]
                    statuses[cell] = state
                    print(f"{cell}: {name} {state}{': ' + reason if reason else ''}", flush=True)
    return {cell.name: statuses.get(cell.name, "not started") for cell in cells}


def fetch(directory: Path, region: str | None, profile: str | None) -> list[str]:
    """Sync each cell's run (events, config.yaml, metrics.jsonl) into <dir>/<cell>/run/; a note
    for each cell with nothing in S3 yet."""
    session = cloud.aws_session(region, profile)
    notes = []
    for cell, job in read_jobs(directory).items():
        try:
            with cloud.aws_errors():
                cloud.fetch_run(session, job["run"], directory / cell, model=False)
        except UserError as err:
            notes.append(f"{cell}: {err}")
    return notes
