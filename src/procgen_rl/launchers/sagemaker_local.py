"""The sagemaker backend: the training job SageMaker would run, in local mode on this machine's Docker.

The SageMaker Python SDK starts INSTANCES containers of the image with docker-compose, on one
network where they resolve each other as algo-1, algo-2...; each runs `train`, the same entry
point as on SageMaker. Nothing leaves the machine: `file://` output, no AWS account, telemetry
off, and the SDK gets placeholder credentials (it would otherwise copy the user's real AWS keys
into the containers' environment).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from procgen_rl import envvars
from procgen_rl.errors import UserError
from procgen_rl.launchers import Job, LaunchOptions, Outcome
from procgen_rl.launchers.docker_engine import check_docker
from procgen_rl.launchers.sagemaker_sdk import (
    SDK_CONFIG,
    estimator_arguments,
    import_estimator,
    resolved_in_job,
    unpack,
)
from procgen_rl.layout import Layout
from procgen_rl.run_dir import RunDir
from procgen_rl.runtime.sagemaker import LOCAL_MODE, RUN_SUBDIR

ROLE = "arn:aws:iam::000000000000:role/procgen-rl-local"  # local mode never calls IAM
SHM_SIZE = "2g"  # Ray's object store lives in /dev/shm; Docker's default is 64 MB


def prefer_compose_v1() -> None:
    """Local mode runs `compose up --abort-on-container-exit`; Compose v2 can panic there as the
    containers exit ("send on closed channel", https://github.com/docker/compose/issues/11280),
    failing a job that finished. Where the standalone `docker-compose` is installed, the SDK
    uses it (its own fallback, chosen here instead of only when v2 is missing).
    """
    from sagemaker.local.image import _SageMakerContainer

    if shutil.which("docker-compose"):
        _SageMakerContainer._get_compose_cmd_prefix = staticmethod(lambda: ["docker-compose"])  # type: ignore[method-assign]


def local_session() -> Any:
    import boto3
    from sagemaker.local import LocalSession

    os.environ[envvars.AWS_EC2_METADATA_DISABLED] = "true"  # no metadata-service probes
    boto_session = boto3.Session(
        aws_access_key_id="local-mode",
        aws_secret_access_key="local-mode",
        region_name=os.environ.get(envvars.AWS_DEFAULT_REGION, "us-east-1"),
    )
    session = LocalSession(boto_session=boto_session, sagemaker_config=SDK_CONFIG)
    session.config = {"local": {"local_code": True, "container_config": {"shm_size": SHM_SIZE}}}
    return session


def local_resources(instances: int) -> dict[str, Any]:
    """resourceconfig.json as local mode writes it (the SDK names the hosts algo-1-<random>)."""
    return {"hosts": [f"algo-{i}" for i in range(1, instances + 1)], "current_instance_type": LOCAL_MODE}


def place(job: Job, options: LaunchOptions) -> Layout:
    """The layout the job's head will choose: the job's hosts share this machine."""
    if job.resume:
        raise UserError(
            "--backend sagemaker starts a new job; resume a local-mode job's model with "
            "`procgen-rl train --resume RUN/model` on another backend"
        )
    if options.instances < 1:
        raise UserError(f"--instances must be >= 1, got {options.instances}")
    return resolved_in_job(job.experiment_file, job.overrides, local_resources(options.instances))[1]


def launch(job: Job, options: LaunchOptions, layout: Layout) -> Outcome:
    """Run the job; unpack its model.tar.gz and output.tar.gz into the run directory.

    The run's config.yaml is the job's own (RUN/output/data/run): its head resolves the
    hyperparameters as `resolved_in_job` does here.
    """
    arguments = estimator_arguments(job.experiment_file, job.overrides)
    check_docker(options.image)
    Estimator = import_estimator()
    prefer_compose_v1()
    run_path = job.local_run.path
    run_path.mkdir(parents=True, exist_ok=True)  # new or empty: the CLI checked
    estimator = Estimator(
        image_uri=options.image,
        role=ROLE,
        instance_count=options.instances,
        instance_type="local",
        output_path=f"file://{run_path.resolve()}",
        base_job_name="procgen-rl",
        sagemaker_session=local_session(),
        **arguments,
    )
    try:
        estimator.fit(wait=True, logs=True)
    except RuntimeError as err:  # the SDK's "Failed to run: [docker-compose ...]"
        raise UserError(f"the local training job failed ({err}); its log is above") from None
    for archive in sorted(run_path.rglob("*.tar.gz")):
        unpack(archive, run_path / archive.name.removesuffix(".tar.gz"))
    return Outcome.of(RunDir(run_path / RUN_SUBDIR), model=run_path / "model")
