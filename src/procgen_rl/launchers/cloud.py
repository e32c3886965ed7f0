"""SageMaker training jobs in the user's AWS account: the tested image, unchanged, on ml.* instances.

`procgen-rl cloud train` pushes the local image to ECR (a GPU image when any instance group is a
g/p family) and starts one training job with the SageMaker Python SDK's Estimator; nothing else
is uploaded, the experiment is a file inside the image. A run lives under one S3 prefix,
RUN = s3://BUCKET/PREFIX/JOB:

    RUN/checkpoints/            /opt/ml/checkpoints, synced during the job; a spot restart
                                gets them back and resumes with the step counter intact
    RUN/tensorboard/            the run directory (TensorBoard events, config.yaml), synced live
    RUN/output/model.tar.gz     the final model: a run directory + policy.pt2 (end of job)
    RUN/output/output.tar.gz    /opt/ml/output/data (end of job)

`procgen-rl cloud fetch RUN DIR` brings the events (DIR/run) and the model (DIR/model) back.
Region, credentials and profile are boto3's usual configuration; role and bucket are flags or
SAGEMAKER_ROLE / SAGEMAKER_BUCKET. AWS_ENDPOINT_URL (boto3's) points every call at an emulator,
and PROCGEN_RL_REGISTRY pushes the image to another registry than the ECR one (tests: a local
registry, while the ECR API calls go to the emulator).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procgen_rl import __version__, envvars
from procgen_rl.errors import UserError
from procgen_rl.launchers import Job, check_buildable
from procgen_rl.launchers.docker_engine import build_command, check_docker
from procgen_rl.launchers.sagemaker_sdk import (
    SDK_CONFIG,
    estimator_arguments,
    import_estimator,
    import_sdk,
    resolved_in_job,
    unpack,
)
from procgen_rl.layout import Layout
from procgen_rl.reporting import METRIC_KEYS, METRIC_LINE_REGEX
from procgen_rl.runtime.sagemaker import CHECKPOINTS_SUBDIR, CONTAINER_BASE, GPU_FAMILIES, RUN_SUBDIR

ROLE_ENV = envvars.SAGEMAKER_ROLE
BUCKET_ENV = envvars.SAGEMAKER_BUCKET
REGISTRY_ENV = envvars.REGISTRY
DEFAULT_PREFIX = "procgen-rl"
DEFAULT_REPOSITORY = "procgen-rl"
DEFAULT_MAX_RUN_S = 24 * 3600
LEARNER_GROUP, ROLLOUT_GROUP = "learner", "rollout"  # heterogeneous jobs: GPU learner, CPU samplers
JOB_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # CreateTrainingJob's rule
INSTANCE_TYPE_PATTERN = re.compile(r"ml\.[a-z0-9-]+\.[a-z0-9-]+")


@dataclass(frozen=True)
class InstanceGroup:
    name: str
    instance_type: str
    count: int

    @property
    def gpu(self) -> bool:
        return self.instance_type.startswith(GPU_FAMILIES)


@dataclass(frozen=True)
class JobSpec:
    """Everything that names or places the job; `estimator_kwargs` turns it into Estimator arguments."""

    name: str
    groups: tuple[InstanceGroup, ...]
    bucket: str
    prefix: str
    spot: bool
    max_run: int
    max_wait: int | None
    tags: dict[str, str]

    @property
    def run_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{self.name}" if self.prefix else f"s3://{self.bucket}/{self.name}"

    @property
    def summary(self) -> str:
        hosts = " + ".join(f"{g.count} x {g.instance_type}" for g in self.groups)
        return f"{self.name} ({hosts}, {'spot' if self.spot else 'on-demand'})"

    @property
    def variant(self) -> str:
        return image_variant(self.groups)


def image_variant(groups: tuple[InstanceGroup, ...]) -> str:
    """One image per job: the GPU image when any group has GPUs (it runs on CPU hosts too)."""
    return "gpu" if any(group.gpu for group in groups) else "cpu"


def instance_groups(
    instance_type: str,
    instance_count: int,
    gpu_instances: int,
    cpu_instances: int,
    gpu_instance_type: str,
    cpu_instance_type: str,
) -> tuple[InstanceGroup, ...]:
    """One group of `instance_count` hosts, or a GPU learner group + a CPU rollout group."""
    if not (gpu_instances or cpu_instances):
        _check_instance_type("--instance-type", instance_type)
        if instance_count < 1:
            raise UserError(f"--instance-count must be >= 1, got {instance_count}")
        return (InstanceGroup(LEARNER_GROUP, instance_type, instance_count),)
    if gpu_instances < 1 or cpu_instances < 1:
        raise UserError(
            "--gpu-instances and --cpu-instances go together (GPU_INSTANCES, CPU_INSTANCES): "
            f"got {gpu_instances} and {cpu_instances}; for one instance type use --instance-count"
        )
    _check_instance_type("--gpu-instance-type", gpu_instance_type)
    _check_instance_type("--cpu-instance-type", cpu_instance_type)
    learner = InstanceGroup(LEARNER_GROUP, gpu_instance_type, gpu_instances)
    rollout = InstanceGroup(ROLLOUT_GROUP, cpu_instance_type, cpu_instances)
    if not learner.gpu:
        raise UserError(f"--gpu-instance-type {gpu_instance_type}: not a GPU type (families {', '.join(GPU_FAMILIES)})")
    if rollout.gpu:
        raise UserError(
            f"--cpu-instance-type {cpu_instance_type}: a GPU type; the rollout group samples "
            "on CPUs, the learner group has the GPUs"
        )
    return learner, rollout


def resource_config(groups: tuple[InstanceGroup, ...]) -> dict[str, Any]:
    """resourceconfig.json as the job's hosts will read it, for planning the job before it
    starts; SageMaker's host names may differ, the plan does not."""
    names = (f"algo-{i}" for i in itertools.count(1))
    instance_groups = [
        {
            "instance_group_name": g.name,
            "instance_type": g.instance_type,
            "hosts": [next(names) for _ in range(g.count)],
        }
        for g in groups
    ]
    return {"hosts": [host for group in instance_groups for host in group["hosts"]], "instance_groups": instance_groups}


def _check_instance_type(flag: str, instance_type: str) -> None:
    if not INSTANCE_TYPE_PATTERN.fullmatch(instance_type):
        raise UserError(
            f"{flag} {instance_type!r}: not a SageMaker instance type (ml.<family>.<size>, e.g. ml.g4dn.xlarge)"
        )


def job_name(experiment_name: str) -> str:
    """procgen-rl-<experiment>-<UTC timestamp>, within CreateTrainingJob's 63 characters."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", experiment_name).strip("-")[: 63 - len(stamp) - 12]
    return "-".join(part for part in ("procgen-rl", slug, stamp) if part)


def check_job_name(name: str) -> str:
    if not JOB_NAME_PATTERN.fullmatch(name):
        raise UserError(
            f"--job-name {name!r}: 1-63 letters, digits and hyphens, starting and ending with a letter or digit"
        )
    return name


def metric_definitions() -> list[dict[str, str]]:
    """One CloudWatch metric per field of the trainer's `[metrics]` line (reporting.METRIC_KEYS)."""
    return [{"Name": key, "Regex": METRIC_LINE_REGEX.format(name=key)} for key in METRIC_KEYS]


# --- AWS configuration --------------------------------------------------------------------------


def aws_session(region: str | None = None, profile: str | None = None) -> Any:
    """A boto3 session from flags, else the standard chain (env, profile); region and keys required."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.Session(profile_name=profile, region_name=region or os.environ.get(envvars.AWS_REGION))
    except ProfileNotFound as err:
        raise UserError(f"--profile or AWS_PROFILE: {err}") from None
    if not session.region_name:
        raise UserError(
            "no AWS region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION (or `region` in your AWS profile)"
        )
    if session.get_credentials() is None:
        raise UserError(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a "
            "profile (--profile or AWS_PROFILE)"
        )
    return session


def required(value: str | None, flag: str, env: str, what: str) -> str:
    """A flag's value, else its environment variable's; missing is an error naming both."""
    value = value or os.environ.get(env)
    if not value:
        raise UserError(f"no {what}: pass {flag} or set {env}")
    return value


@contextlib.contextmanager
def aws_errors() -> Iterator[None]:
    """AWS refusals (access denied, no such bucket...) as one line instead of a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as err:
        error = err.response.get("Error", {})
        raise UserError(f"AWS {err.operation_name}: {error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as err:
        raise UserError(f"AWS: {err}") from None


def check_bucket(session: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        session.client("s3").head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        raise UserError(
            f"--bucket or {BUCKET_ENV}: bucket {bucket!r} not usable ({code}); create it in "
            f"{session.region_name} or name another"
        ) from None


# --- the image ----------------------------------------------------------------------------------


def local_image(variant: str) -> str:
    return f"procgen-rl:{__version__}-{variant}"


def remote_image(session: Any, image: str, repository: str, registry: str | None) -> tuple[str, dict]:
    """The pushed image's URI and ECR's login for it.

    The tag adds the local image id, so a job (and its spot restarts) runs exactly this build
    even after the next push.
    """
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    name = image.rsplit("/", 1)[-1]
    tag = name.split(":", 1)[1] if ":" in name else "latest"
    auth = session.client("ecr").get_authorization_token()["authorizationData"][0]
    host = registry or auth["proxyEndpoint"].removeprefix("https://")
    return f"{host}/{repository}:{tag}-{image_id.removeprefix('sha256:')[:12]}", auth


def push_image(session: Any, image: str, remote: str, repository: str, auth: dict) -> None:
    """Create the ECR repository if missing, log in (password on stdin), tag and push."""
    ecr = session.client("ecr")
    try:
        ecr.describe_repositories(repositoryNames=[repository])
    except ecr.exceptions.RepositoryNotFoundException:
        print(f"creating ECR repository {repository}", flush=True)
        ecr.create_repository(repositoryName=repository)
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    host = remote.split("/", 1)[0]
    login = subprocess.run(
        ["docker", "login", "--username", user, "--password-stdin", host],
        input=password,
        capture_output=True,
        text=True,
    )
    if login.returncode:
        raise UserError(f"docker login {host} failed: {' '.join(login.stderr.split()) or 'no reason given'}")
    subprocess.run(["docker", "tag", image, remote], check=True)
    print(f"pushing {image} to {remote} (layers already there are skipped)", flush=True)
    if subprocess.run(["docker", "push", remote]).returncode:
        raise UserError(f"docker push {remote} failed; its output is above")


def publish_image(session: Any, options: CloudOptions, variant: str) -> str:
    """Push the local image (`variant`: cpu or gpu, unless options.image names one) to the
    registry, except on a dry run; return its URI there."""
    image = options.image or local_image(variant)
    check_docker(image, build_command(variant), hint=" (the image is pushed from it)")
    with aws_errors():
        registry = options.registry or os.environ.get(REGISTRY_ENV)
        remote, auth = remote_image(session, image, options.repository, registry)
        if not options.dry_run:
            push_image(session, image, remote, options.repository, auth)
    return remote


# --- the job ------------------------------------------------------------------------------------


def estimator_kwargs(spec: JobSpec, image_uri: str, role: str, common: dict[str, Any]) -> dict[str, Any]:
    """The Estimator's arguments for this job (the SDK turns them into CreateTrainingJob);
    `common` is `sagemaker_sdk.estimator_arguments`: hyperparameters, environment, no profiler."""
    import_sdk()
    from sagemaker.debugger import TensorBoardOutputConfig
    from sagemaker.instance_group import InstanceGroup as SdkInstanceGroup

    if len(spec.groups) == 1:
        instances = {"instance_type": spec.groups[0].instance_type, "instance_count": spec.groups[0].count}
    else:
        instances = {"instance_groups": [SdkInstanceGroup(g.name, g.instance_type, g.count) for g in spec.groups]}
    spot = {"use_spot_instances": True, "max_wait": spec.max_wait} if spec.spot else {}
    return {
        **common,
        **instances,
        **spot,
        "image_uri": image_uri,
        "role": role,
        "max_run": spec.max_run,
        "output_path": spec.run_uri.rsplit("/", 1)[0],  # the SDK appends <job>/output/
        "checkpoint_s3_uri": f"{spec.run_uri}/checkpoints",
        "checkpoint_local_path": str(CONTAINER_BASE / CHECKPOINTS_SUBDIR),
        "tensorboard_output_config": TensorBoardOutputConfig(
            f"{spec.run_uri}/tensorboard", str(CONTAINER_BASE / RUN_SUBDIR)
        ),
        "metric_definitions": metric_definitions(),
        "tags": [{"Key": key, "Value": value} for key, value in spec.tags.items()],
    }


def sagemaker_session(session: Any) -> Any:
    return import_sdk().Session(boto_session=session, sagemaker_config=SDK_CONFIG)


def capture_requests(client: Any, operation: str) -> list[dict[str, Any]]:
    """Every `operation` request the client sends, as the SDK built it (a botocore event hook)."""
    requests: list[dict[str, Any]] = []
    client.meta.events.register(
        f"provide-client-params.{client.meta.service_model.service_name}.{operation}",
        lambda params, **_: requests.append(json.loads(json.dumps(params))),
    )
    return requests


def start_job(
    spec: JobSpec, kwargs: dict[str, Any], session: Any, wait: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Start the job (wait: stream its CloudWatch logs to the end); return the CreateTrainingJob request.

    A dry run sends nothing: botocore's Stubber answers CreateTrainingJob, so the request
    returned is exactly the one the SDK would send.
    """
    from botocore.stub import Stubber

    sm_session = sagemaker_session(session)
    from sagemaker.exceptions import UnexpectedStatusException

    requests = capture_requests(sm_session.sagemaker_client, "CreateTrainingJob")
    estimator = import_estimator()(sagemaker_session=sm_session, **kwargs)
    with contextlib.ExitStack() as stack:
        if dry_run:
            sdk_logger = logging.getLogger("sagemaker")  # no "Creating training-job" for a dry run
            stack.callback(sdk_logger.setLevel, sdk_logger.level)
            sdk_logger.setLevel(logging.WARNING)
            stubber = stack.enter_context(Stubber(sm_session.sagemaker_client))
            stubber.add_response(
                "create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:::training-job/{spec.name}"}
            )
        try:
            estimator.fit(job_name=spec.name, wait=wait and not dry_run, logs="All" if wait else False)
        except UnexpectedStatusException as err:
            raise UserError(" ".join(str(err).split())) from None  # "Error for Training job X: Failed. Reason: ..."
    return requests[-1]


def redacted(request: dict[str, Any]) -> dict[str, Any]:
    """The request without the job's Ray token, for printing."""
    environment = dict(request.get("Environment", {}))
    if envvars.RAY_AUTH_TOKEN in environment:
        environment[envvars.RAY_AUTH_TOKEN] = "<random, not shown>"
    return {**request, "Environment": environment} if environment else request


def plan_job(
    experiment_name: str,
    groups: tuple[InstanceGroup, ...],
    bucket: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    spot: bool = True,
    max_run: int = DEFAULT_MAX_RUN_S,
    max_wait: int | None = None,
    tags: dict[str, str] | None = None,
    name: str | None = None,
) -> JobSpec:
    """The job's name, instances, S3 place and limits, checked (max_wait defaults to 2 x max_run)."""
    if max_run < 1:
        raise UserError(f"--max-run must be >= 1 s, got {max_run}")
    if spot:
        max_wait = max_wait or 2 * max_run
        if max_wait < max_run:
            raise UserError(
                f"--max-wait {max_wait} s must be >= --max-run {max_run} s (spot jobs wait "
                "for capacity within max-wait)"
            )
    elif max_wait:
        raise UserError("--max-wait applies to spot jobs only; drop it or drop --no-spot")
    return JobSpec(
        check_job_name(name) if name else job_name(experiment_name),
        groups,
        bucket,
        prefix.strip("/"),
        spot,
        max_run,
        max_wait,
        {"project": "procgen-rl", "experiment": experiment_name, **(tags or {})},
    )


@dataclass(frozen=True)
class CloudOptions:
    """How and where the job runs: `procgen-rl cloud train`'s flags."""

    groups: tuple[InstanceGroup, ...]
    region: str | None = None
    profile: str | None = None
    role: str | None = None
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    spot: bool = True
    max_run: int = DEFAULT_MAX_RUN_S
    max_wait: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    image: str | None = None
    image_uri: str | None = None  # an image already in the registry: nothing is pushed
    repository: str = DEFAULT_REPOSITORY
    registry: str | None = None
    wait: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class Submitted:
    """The started (or, on a dry run, described) job, its CreateTrainingJob request and the layout
    its hosts will choose."""

    spec: JobSpec
    request: dict[str, Any]
    layout: Layout


def launch(job: Job, options: CloudOptions) -> Submitted:
    """Check the configuration, push the image (not on a dry run), start the job.

    Configuration errors come first, before Docker or AWS is asked anything.
    """
    common = estimator_arguments(job.experiment_file, job.overrides)
    experiment, layout = resolved_in_job(job.experiment_file, job.overrides, resource_config(options.groups))
    check_buildable(experiment)
    role = required(options.role, "--role", ROLE_ENV, "SageMaker execution role (ARN or name)")
    bucket = required(options.bucket, "--bucket", BUCKET_ENV, "S3 bucket for checkpoints and output")
    spec = plan_job(
        job.experiment.name,
        options.groups,
        bucket,
        prefix=options.prefix,
        spot=options.spot,
        max_run=options.max_run,
        max_wait=options.max_wait,
        tags=options.tags,
        name=options.name,
    )
    session = aws_session(options.region, options.profile)
    with aws_errors():
        check_bucket(session, spec.bucket)
    remote = options.image_uri or publish_image(session, options, spec.variant)
    with aws_errors():
        kwargs = estimator_kwargs(spec, remote, role, common)
        if not options.dry_run:
            print(f"starting training job {spec.summary}\nrun: {spec.run_uri}", flush=True)
        return Submitted(spec, start_job(spec, kwargs, session, wait=options.wait, dry_run=options.dry_run), layout)


# --- results ------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not match:
        raise UserError(f"{uri}: not an S3 URI (s3://bucket/prefix/job)")
    return match.group(1), match.group(2).strip("/")


@dataclass(frozen=True)
class Fetched:
    run: Path
    files: int  # files under RUN/tensorboard/ that were new or changed
    model: Path | None


def fetch_run(session: Any, run_uri: str, target: Path, need_model: bool = False, model: bool = True) -> Fetched:
    """Sync RUN/tensorboard/ into target/run (new or resized files only) and, with `model`, unpack
    the final model into target/model when the job has written it."""
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(run_uri)
    s3 = session.client("s3")
    events_prefix = f"{key}/tensorboard/" if key else "tensorboard/"
    run, copied, seen = target / "run", 0, 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=events_prefix):
        for item in page.get("Contents", []):
            seen += 1
            local = run / item["Key"].removeprefix(events_prefix)
            if local.is_file() and local.stat().st_size == item["Size"]:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(local))
            copied += 1
    if not model:
        if not seen:
            raise UserError(f"{run_uri}: nothing under tensorboard/ yet (the job writes it once training starts)")
        return Fetched(run, copied, None)
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "model.tar.gz"
    model_key = f"{key}/output/model.tar.gz" if key else "output/model.tar.gz"
    try:
        s3.download_file(bucket, model_key, str(archive))
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
            raise
        if need_model:
            raise UserError(
                f"no s3://{bucket}/{model_key} yet: the job has not finished (or failed); "
                "its status: aws sagemaker describe-training-job --training-job-name "
                f"{key.rsplit('/', 1)[-1]}"
            ) from None
        if not seen:
            raise UserError(
                f"{run_uri}: nothing under tensorboard/ or output/; give the RUN that "
                "`procgen-rl cloud train` printed (s3://bucket/prefix/job)"
            ) from None
        return Fetched(run, copied, None)
    return Fetched(run, copied, unpack(archive, target / "model"))
