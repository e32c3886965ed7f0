"""`procgen-rl cloud`: the real boto3 and SageMaker SDK calls, answered by moto's server on loopback.

No AWS account: a moto server (S3, ECR, SageMaker, IAM, CloudWatch Logs) answers at
AWS_ENDPOINT_URL. What moto stores is asserted through DescribeTrainingJob; moto answers that with
its own MetricDefinitions and without Environment, so those two are asserted on the request the
SDK sent (`cloud.capture_requests`, a botocore event hook). moto completes a job at once: nothing
runs in it. The `docker` tests push the real CPU image to a real registry (Debian's
docker-registry on 127.0.0.1) while the ECR API calls go to moto.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import IMAGE, REPO, assert_one_line_error, free_port, run_cli, tensorboard_scalar_tags
from procgen_rl import __version__, envvars
from procgen_rl.errors import UserError
from procgen_rl.launchers import cloud
from procgen_rl.launchers.sagemaker_sdk import estimator_arguments
from procgen_rl.reporting import METRIC_KEYS, Reporter, metric_line
from procgen_rl.runtime.sagemaker import decode_hyperparameter, job_experiment

REGION = "us-east-1"
BUCKET = "procgen-rl-test-bucket"
ROLE_NAME = "procgen-rl-test-role"
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/procgen-rl:0.1.0-gpu-0123456789ab"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"  # where SageMaker (and the SDK's log streaming) keeps job logs
AWS_SETTINGS = (
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    cloud.ROLE_ENV,
    cloud.BUCKET_ENV,
    cloud.REGISTRY_ENV,
)


@pytest.fixture(autouse=True)
def no_aws_configuration(monkeypatch, tmp_path):
    """Nothing from this machine's AWS setup, and no instance-metadata probes off loopback."""
    for name in AWS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # `docker login` writes here


@pytest.fixture(scope="module")
def moto_endpoint():
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with serving(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], f"{endpoint}/moto-api/"
    ):
        yield endpoint


@contextlib.contextmanager
def serving(command: list[str], url: str, timeout: float = 60) -> Iterator[None]:
    """Run a loopback server while the block runs, once `url` answers."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while process.poll() is None:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"{url} did not answer within {timeout} s") from None
                time.sleep(0.5)
        else:
            raise RuntimeError(f"{command[0]} exited with {process.returncode}")
        yield
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """A fresh emulated account: one bucket, one SageMaker role."""
    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    session = boto3.Session(region_name=REGION)
    session.client("s3").create_bucket(Bucket=BUCKET)
    trust = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
    }
    role_arn = session.client("iam").create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    return SimpleNamespace(session=session, role_arn=role_arn["Role"]["Arn"], sagemaker=session.client("sagemaker"))


def describe(aws, name: str) -> dict:
    return aws.sagemaker.describe_training_job(TrainingJobName=name)


def put_job_log(aws, job: str, *lines: str) -> None:
    """Log lines as SageMaker writes them: group /aws/sagemaker/TrainingJobs, stream <job>/algo-1-<epoch>."""
    logs = aws.session.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    stream = f"{job}/algo-1-1764000000"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
    )


def sample_metrics() -> dict[str, float]:
    return {
        "iteration": 7,
        "timesteps_total": 114688,
        "timesteps_trained": 114688,
        "episodes_total": 31,
        "episode_reward_mean": 6.25,
        "episode_reward_min": 0.0,
        "episode_reward_max": 10.0,
        "episode_len_mean": 210.5,
        "normalized_score": -0.125,
        "steps_per_s": 1234.5678,
        "time_total_s": 93.25,
        "policy_loss": -1.5e-05,
        "vf_loss": 0.3,
        "entropy": 2.7,
        "eval_train_reward_mean": 7.5,
        "eval_test_reward_mean": 6.0,
        "eval_train_normalized_score": 0.5,
        "eval_test_normalized_score": 0.2,
        "eval_generalization_gap": 0.3,
        "aux_value_loss": 0.25,  # a PPG iteration that ended a phase
        "aux_kl": 0.002,
        "aux_vf_loss": 0.125,
    }


# --- without AWS -------------------------------------------------------------------------------


def test_metric_definitions_parse_the_line_the_trainer_prints(tmp_path):
    stream = io.StringIO()
    reporter = Reporter(str(tmp_path), stream)  # the trainer's own reporter, events and all
    reporter.report(sample_metrics(), 8_000_000, 60.0)
    reporter.close()
    (line,) = stream.getvalue().splitlines()
    definitions = cloud.metric_definitions()
    assert [d["Name"] for d in definitions] == list(METRIC_KEYS)
    for definition in definitions:
        value = float(re.search(definition["Regex"], f"2026-11-25T17:00:00 algo-1 {line}").group(1))
        assert value == pytest.approx(sample_metrics()[definition["Name"]], rel=1e-5), definition


@pytest.mark.parametrize(
    "instance_type, variant",
    [
        ("ml.g4dn.4xlarge", "gpu"),
        ("ml.g5.xlarge", "gpu"),
        ("ml.p3.2xlarge", "gpu"),
        ("ml.p4d.24xlarge", "gpu"),
        ("ml.c5.4xlarge", "cpu"),
        ("ml.m5.large", "cpu"),
    ],
)
def test_the_instance_type_picks_the_image(instance_type, variant):
    groups = cloud.instance_groups(instance_type, 2, 0, 0, "", "")
    assert cloud.plan_job("smoke", groups, BUCKET).variant == variant


def test_heterogeneous_groups_run_the_gpu_image():
    groups = cloud.instance_groups("", 1, 1, 3, "ml.g4dn.xlarge", "ml.c5.4xlarge")
    assert [(g.name, g.instance_type, g.count) for g in groups] == [
        ("learner", "ml.g4dn.xlarge", 1),
        ("rollout", "ml.c5.4xlarge", 3),
    ]
    assert cloud.plan_job("smoke", groups, BUCKET).variant == "gpu"


def test_every_job_gets_its_own_ray_token():
    tokens = {
        estimator_arguments("experiments/smoke.yaml", {})["environment"][envvars.RAY_AUTH_TOKEN] for _ in range(2)
    }
    assert len(tokens) == 2 and all(re.fullmatch("[0-9a-f]{32}", token) for token in tokens)


def test_job_names_fit_sagemaker_rules():
    name = cloud.job_name("a_very_long.experiment name" * 4)
    assert len(name) <= 63 and cloud.JOB_NAME_PATTERN.fullmatch(name) and name.startswith("procgen-rl-a-very")
    with pytest.raises(UserError, match="--job-name 'bad_name'"):
        cloud.check_job_name("bad_name")


@pytest.mark.parametrize(
    "args, env, fragments",
    [
        (
            [],
            {
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY": "s",
                cloud.BUCKET_ENV: BUCKET,
            },
            ["no SageMaker execution role", "pass --role or set SAGEMAKER_ROLE"],
        ),
        (
            [],
            {
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY": "s",
                cloud.ROLE_ENV: ROLE_NAME,
            },
            ["no S3 bucket", "pass --bucket or set SAGEMAKER_BUCKET"],
        ),
        (
            ["--role", ROLE_NAME, "--bucket", BUCKET],
            {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
            ["no AWS region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION"],
        ),
        (
            ["--role", ROLE_NAME, "--bucket", BUCKET, "--region", REGION],
            {},
            ["no AWS credentials", "--profile or AWS_PROFILE"],
        ),
        (["--role", ROLE_NAME, "--bucket", BUCKET, "--profile", "nope"], {}, ["--profile or AWS_PROFILE", "nope"]),
        (["--instance-type", "g4dn.xlarge"], {}, ["--instance-type 'g4dn.xlarge': not a SageMaker instance type"]),
        (["--instance-count", "0"], {}, ["--instance-count must be >= 1, got 0"]),
        (["--gpu-instances", "1"], {}, ["--gpu-instances and --cpu-instances go together"]),
        (
            ["--gpu-instances", "1", "--cpu-instances", "2", "--gpu-instance-type", "ml.c5.xlarge"],
            {},
            ["--gpu-instance-type ml.c5.xlarge: not a GPU type"],
        ),
        (
            ["--gpu-instances", "1", "--cpu-instances", "2", "--cpu-instance-type", "ml.p3.2xlarge"],
            {},
            ["--cpu-instance-type ml.p3.2xlarge: a GPU type"],
        ),
        (
            ["--max-run", "3600", "--max-wait", "600"],
            {cloud.ROLE_ENV: "r", cloud.BUCKET_ENV: BUCKET},
            ["--max-wait 600 s must be >= --max-run 3600 s"],
        ),
        (
            ["--no-spot", "--max-wait", "600"],
            {cloud.ROLE_ENV: "r", cloud.BUCKET_ENV: BUCKET},
            ["--max-wait applies to spot jobs only"],
        ),
        (
            ["--job-name", "has_underscore"],
            {cloud.ROLE_ENV: "r", cloud.BUCKET_ENV: BUCKET},
            ["--job-name 'has_underscore'"],
        ),
        (["--tag", "novalue"], {}, ["--tag: expected KEY=VALUE"]),
        (["--set", "env_config.env_name=pong"], {}, ["--set env_config.env_name: unknown game 'pong'"]),
        (["--set", "model.custom_model_config={hidden: -1}"], {}, ["model.custom_model_config: ImpalaCNN fails"]),
    ],
)
def test_missing_or_bad_configuration_is_one_line_naming_the_flag(args, env, fragments):
    result = run_cli("cloud", "train", "experiments/smoke.yaml", *args, timeout=120, env=env)
    assert_one_line_error(result, *fragments)


def test_an_experiment_outside_the_image_is_refused(tmp_path):
    outside = tmp_path / "mine.yaml"
    shutil.copy(REPO / "experiments" / "smoke.yaml", outside)
    result = run_cli("cloud", "train", str(outside), "--dry-run", timeout=120)
    assert_one_line_error(result, "the image only holds experiments/*.yaml")


def test_fetch_into_a_path_that_cannot_be_a_directory_fails_before_aws(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli("cloud", "fetch", "s3://bucket/procgen-rl/job", str(tmp_path / "file" / "run"), timeout=120)
    assert_one_line_error(result, f"DIR {tmp_path}/file/run: {tmp_path}/file is not a directory; choose another DIR")


def test_fetch_needs_an_s3_uri():
    result = run_cli(
        "cloud",
        "fetch",
        "results/some-run",
        "out",
        "--region",
        REGION,
        timeout=120,
        env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
    )
    assert_one_line_error(result, "results/some-run: not an S3 URI (s3://bucket/prefix/job)")


def make_dry_run(*args: str) -> str:
    """The commands `make -n` would run (VENV elsewhere: nothing is built or touched)."""
    result = subprocess.run(
        ["make", "-n", *args, "VENV=/nonexistent-venv"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return result.stdout


def test_make_targets_pass_the_cloud_variables():
    hetero = make_dry_run(
        "train-cloud",
        "EXPERIMENT=experiments/smoke.yaml",
        "GPU_INSTANCES=1",
        "CPU_INSTANCES=3",
        "CPU_INSTANCE_TYPE=ml.c5.9xlarge",
        "DRY_RUN=1",
        "SET=env_config.env_name=starpilot",
    )
    assert (
        "procgen-rl cloud train experiments/smoke.yaml --instance-count 1 --gpu-instances 1 --cpu-instances 3 "
        "--cpu-instance-type ml.c5.9xlarge --dry-run --set env_config.env_name=starpilot"
    ) in hetero
    homogeneous = make_dry_run(
        "train-cloud",
        "INSTANCE_TYPE=ml.g4dn.4xlarge",
        "INSTANCE_COUNT=2",
        "SPOT=0",
        "WAIT=1",
        "MAX_RUN=7200",
        "CLOUD_ARGS=--bucket b",
    )
    assert (
        "cloud train experiments/ppo-8m.yaml --instance-count 2 --gpu-instances 0 --cpu-instances 0 "
        "--instance-type ml.g4dn.4xlarge --no-spot --max-run 7200 --wait --bucket b"
    ) in homogeneous
    run = "s3://b/procgen-rl/procgen-rl-smoke-20261125-170000/"
    board = make_dry_run("tensorboard", f"RUN={run}", "RESULTS_DIR=res")
    assert f"procgen-rl cloud fetch {run} res/procgen-rl-smoke-20261125-170000\n" in board
    assert "tensorboard --logdir res/procgen-rl-smoke-20261125-170000/run --host 127.0.0.1" in board
    rollout = make_dry_run("rollout", f"RUN={run}", "RESULTS_DIR=res")
    assert f"cloud fetch {run} res/procgen-rl-smoke-20261125-170000 --model" in rollout
    assert "procgen-rl rollout res/procgen-rl-smoke-20261125-170000/model --episodes 16" in rollout


# --- against moto --------------------------------------------------------------------------------


def start(aws, groups, *, overrides=None, wait=False, dry_run=False, **plan) -> tuple[cloud.JobSpec, dict]:
    spec = cloud.plan_job("smoke", groups, BUCKET, **plan)
    common = estimator_arguments("experiments/smoke.yaml", overrides or {})
    kwargs = cloud.estimator_kwargs(spec, IMAGE_URI, ROLE_NAME, common)
    return spec, cloud.start_job(spec, kwargs, aws.session, wait=wait, dry_run=dry_run)


def test_heterogeneous_spot_job_configuration(aws, repo, monkeypatch):
    groups = cloud.instance_groups("", 1, 1, 3, "ml.g4dn.2xlarge", "ml.c5.4xlarge")
    overrides = {
        "env_config.env_name": "starpilot",
        "stop.timesteps_total": 100000,
        "algorithm.normalize_reward": False,
    }
    spec, request = start(aws, groups, overrides=overrides, max_run=3600, tags={"team": "rl"}, name="procgen-rl-hetero")
    job = describe(aws, spec.name)
    run = f"s3://{BUCKET}/procgen-rl/procgen-rl-hetero"
    assert spec.run_uri == run
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE_URI
    assert job["RoleArn"] == aws.role_arn  # the SDK resolved the role name through IAM
    assert job["ResourceConfig"]["InstanceGroups"] == [
        {"InstanceGroupName": "learner", "InstanceType": "ml.g4dn.2xlarge", "InstanceCount": 1},
        {"InstanceGroupName": "rollout", "InstanceType": "ml.c5.4xlarge", "InstanceCount": 3},
    ]
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"] == {"S3Uri": f"{run}/checkpoints", "LocalPath": "/opt/ml/checkpoints"}
    assert job["TensorBoardOutputConfig"] == {
        "S3OutputPath": f"{run}/tensorboard",
        "LocalPath": "/opt/ml/output/data/run",
    }
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"{run}/output/model.tar.gz"  # where fetch looks
    tags = aws.sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
    assert {"Key": "team", "Value": "rl"} in tags and {"Key": "experiment", "Value": "smoke"} in tags
    # The hyperparameters moto stored, read back as the container reads them.
    hyperparameters = {key: decode_hyperparameter(value) for key, value in job["HyperParameters"].items()}
    assert hyperparameters == {"experiment": "experiments/smoke.yaml", **overrides}
    monkeypatch.chdir(repo)
    experiment, _ = job_experiment(hyperparameters, cloud.resource_config(groups))
    assert experiment.env_config.env_name == "starpilot" and experiment.algorithm.normalize_reward is False
    # moto replaces MetricDefinitions and drops Environment: the request the SDK sent has them.
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == cloud.metric_definitions()
    assert re.fullmatch("[0-9a-f]{32}", request["Environment"][envvars.RAY_AUTH_TOKEN])


def test_homogeneous_on_demand_job(aws):
    spec, request = start(aws, cloud.instance_groups("ml.c5.xlarge", 2, 0, 0, "", ""), spot=False, max_run=600)
    job = describe(aws, spec.name)
    assert (job["ResourceConfig"]["InstanceType"], job["ResourceConfig"]["InstanceCount"]) == ("ml.c5.xlarge", 2)
    assert "InstanceGroups" not in request["ResourceConfig"]
    assert job["EnableManagedSpotTraining"] is False
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 600}


def test_dry_run_sends_nothing(aws):
    spec, request = start(aws, cloud.instance_groups("ml.g4dn.xlarge", 1, 0, 0, "", ""), dry_run=True)
    assert request["TrainingJobName"] == spec.name
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE_URI
    assert aws.sagemaker.list_training_jobs()["TrainingJobSummaries"] == []
    assert cloud.redacted(request)["Environment"][envvars.RAY_AUTH_TOKEN] == "<random, not shown>"


def test_wait_streams_the_job_log(aws, capsys):
    line = metric_line(sample_metrics())
    put_job_log(aws, "procgen-rl-waited", "host algo-1 of algo-1; head algo-1", line)
    start(aws, cloud.instance_groups("ml.c5.xlarge", 1, 0, 0, "", ""), name="procgen-rl-waited", wait=True)
    assert line in capsys.readouterr().out


def test_a_missing_bucket_is_one_line(aws):
    result = run_cli(
        "cloud", "train", "experiments/smoke.yaml", "--role", ROLE_NAME, "--bucket", "no-such-bucket", timeout=120
    )
    assert_one_line_error(result, "--bucket or SAGEMAKER_BUCKET: bucket 'no-such-bucket' not usable")


def test_no_docker_engine_is_one_line(aws):
    result = run_cli(
        "cloud",
        "train",
        "experiments/smoke.yaml",
        "--role",
        ROLE_NAME,
        "--bucket",
        BUCKET,
        "--dry-run",
        timeout=120,
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert_one_line_error(result, "no Docker engine answers", "start Docker (the image is pushed from it)")


def upload_tree(aws, root: Path, prefix: str) -> None:
    s3 = aws.session.client("s3")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(root)}")


def test_fetch_syncs_events_for_tensorboard_and_unpacks_the_model(aws, tmp_path):
    """A job's S3 layout as SageMaker leaves it, uploaded through S3; fetched; served by TensorBoard."""
    job = "procgen-rl-smoke-20261125-170000"
    run_dir = tmp_path / "opt_ml_run"
    reporter = Reporter(str(run_dir), io.StringIO())
    for iteration in (1, 2):
        reporter.report(sample_metrics() | {"iteration": iteration, "timesteps_total": 512 * iteration}, 1024, 0.0)
    reporter.close()
    (run_dir / "config.yaml").write_text((REPO / "experiments" / "smoke.yaml").read_text())
    upload_tree(aws, run_dir, f"procgen-rl/{job}/tensorboard")
    run_uri = f"s3://{BUCKET}/procgen-rl/{job}"
    target = tmp_path / "fetched"

    running = run_cli("cloud", "fetch", run_uri, str(target), timeout=120)  # while the job runs: events only
    assert running.returncode == 0, running.stderr[-3000:]
    assert f"({len(list(run_dir.iterdir()))} new or changed files)" in running.stdout
    assert "Model: not yet" in running.stdout
    assert (target / "run" / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()
    no_model = run_cli("cloud", "fetch", run_uri, str(target), "--model", timeout=120)
    assert_one_line_error(no_model, f"no s3://{BUCKET}/procgen-rl/{job}/output/model.tar.gz yet", job)

    model_dir = tmp_path / "opt_ml_model"
    (model_dir / "checkpoints" / "checkpoint_000002").mkdir(parents=True)
    (model_dir / "config.yaml").write_text("name: smoke\n")
    (model_dir / "checkpoints" / "checkpoint_000002" / "trainer_state.json").write_text('{"iteration": 2}')
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:  # as SageMaker packs /opt/ml/model
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(model_dir)), recursive=False)
    aws.session.client("s3").upload_file(
        str(tmp_path / "model.tar.gz"), BUCKET, f"procgen-rl/{job}/output/model.tar.gz"
    )
    finished = run_cli("cloud", "fetch", run_uri, str(target), "--model", timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "(0 new or changed files)" in finished.stdout  # a sync: unchanged files are not downloaded again
    assert (target / "model" / "checkpoints" / "checkpoint_000002" / "trainer_state.json").is_file()
    assert "charts/steps_per_s" in tensorboard_scalar_tags(target / "run", "charts/steps_per_s")


def test_fetch_of_an_empty_prefix_says_what_to_give(aws, tmp_path):
    result = run_cli("cloud", "fetch", f"s3://{BUCKET}/procgen-rl/no-such-job", str(tmp_path / "x"), timeout=120)
    assert_one_line_error(result, "nothing under tensorboard/ or output/")


def write_suite(path: Path, seeds: list[int]) -> Path:
    grid = {"env_config.env_name": ["coinrun", "starpilot"], "seed": seeds}
    text = json.dumps({"experiment": "experiments/smoke.yaml", "budget": {"timesteps_total": 1024}, "grid": grid})
    path.write_text(text)  # JSON is YAML
    return path


def cloud_benchmark(suite: Path, directory: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(
        "cloud",
        "benchmark",
        str(suite),
        "--dir",
        str(directory),
        "--instance-type",
        "ml.c5.xlarge",
        "--role",
        ROLE_NAME,
        "--bucket",
        BUCKET,
        "--poll",
        "0.1",
        *args,
        timeout=900,
        env=env,
    )


def test_cloud_benchmark_runs_a_job_per_cell_at_most_n_at_once(aws, tmp_path):
    suite, directory = write_suite(tmp_path / "tiny.yaml", [0, 1]), tmp_path / "suite"
    result = cloud_benchmark(suite, directory, "--image-uri", IMAGE_URI, "--max-concurrent", "1")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    jobs = json.loads((directory / "jobs.json").read_text())
    assert list(jobs) == ["coinrun_seed-0", "coinrun_seed-1", "starpilot_seed-0", "starpilot_seed-1"]
    for cell, job in jobs.items():
        described = describe(aws, job["job"])
        hyperparameters = {key: decode_hyperparameter(value) for key, value in described["HyperParameters"].items()}
        game, seed = cell.split("_seed-")
        assert hyperparameters["env_config.env_name"] == game and hyperparameters["seed"] == int(seed)
        assert hyperparameters["stop.timesteps_total"] == 1024 and hyperparameters["name"] == cell
        assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE_URI  # --image-uri: nothing pushed
        assert job["run"] == f"s3://{BUCKET}/procgen-rl/{job['job']}"
        tags = aws.sagemaker.list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]
        assert {"Key": "suite", "Value": "tiny"} in tags and {"Key": "cell", "Value": cell} in tags
    events = [
        line.split()[0] if "Completed" in line else "start"
        for line in result.stdout.splitlines()
        if line.startswith("starting training job") or line.endswith(" Completed")
    ]
    assert events == [
        "start",
        "coinrun_seed-0:",
        "start",
        "coinrun_seed-1:",
        "start",
        "starpilot_seed-0:",
        "start",
        "starpilot_seed-1:",
    ]  # one at a time
    assert "Suite tiny: 4 of 4 jobs completed" in result.stdout

    again = cloud_benchmark(suite, directory, "--image-uri", IMAGE_URI)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "4 completed, 0 running, 0 to start" in again.stdout
    assert len(aws.sagemaker.list_training_jobs()["TrainingJobSummaries"]) == 4


def test_cloud_benchmark_dry_run_starts_nothing(aws, tmp_path):
    suite, directory = write_suite(tmp_path / "tiny.yaml", [0]), tmp_path / "suite"
    result = cloud_benchmark(suite, directory, "--image-uri", IMAGE_URI, "--dry-run")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(("coinrun_seed-0: ", "starpilot_seed-0: "))]
    assert len(lines) == 2 and '"env_config.env_name": "starpilot"' in lines[1]
    assert "Dry run: nothing pushed or started; 2 jobs would start." in result.stdout
    assert aws.sagemaker.list_training_jobs()["TrainingJobSummaries"] == [] and not directory.exists()


def test_cloud_benchmark_bad_input_is_one_line(aws, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"experiment": "experiments/smoke.yaml", "budget": {"timesteps_total": 1}, "grid": {}}))
    assert_one_line_error(cloud_benchmark(bad, tmp_path / "d", "--image-uri", IMAGE_URI), "grid is empty")
    suite = write_suite(tmp_path / "tiny.yaml", [0])
    assert_one_line_error(
        cloud_benchmark(suite, tmp_path / "d", "--image-uri", IMAGE_URI, "--max-concurrent", "0"),
        "--max-concurrent must be >= 1",
    )
    assert not (tmp_path / "d").exists()


def test_report_fetches_a_cloud_suites_runs(aws, tmp_path):
    """Each job's run in S3 as SageMaker syncs it (config.yaml, metrics.jsonl): fetched, reported."""
    from procgen_rl.config import load_experiment, save_experiment

    suite, directory = write_suite(tmp_path / "tiny.yaml", [0]), tmp_path / "suite"
    assert cloud_benchmark(suite, directory, "--image-uri", IMAGE_URI).returncode == 0
    jobs = json.loads((directory / "jobs.json").read_text())
    run = tmp_path / "opt_ml_run"
    run.mkdir()
    overrides = {"env_config.env_name": "coinrun", "seed": 0, "name": "coinrun_seed-0"}
    save_experiment(load_experiment(REPO / "experiments" / "smoke.yaml", overrides), run / "config.yaml")
    rows = [{"iteration": i, "timesteps_total": 512 * i, "episode_reward_mean": 5.0 + i} for i in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    upload_tree(aws, run, f"procgen-rl/{jobs['coinrun_seed-0']['job']}/tensorboard")  # starpilot: nothing yet

    result = run_cli("report", str(directory), timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (directory / "coinrun_seed-0" / "run" / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    scores = json.loads((directory / "scores.json").read_text())
    assert scores["runs"] == 1 and scores["per_game"][0]["train"]["return"] == 7.0
    assert "starpilot_seed-0: " in result.stdout and "nothing under tensorboard/ yet" in result.stdout


# --- with Docker: the real image pushed to a real registry ----------------------------------------


@pytest.fixture(scope="module")
def registry(require_docker, tmp_path_factory):
    """Debian's docker-registry on a free loopback port (Docker pushes to 127.0.0.1 without TLS)."""
    binary = shutil.which("docker-registry")
    if not binary:
        reason = "no docker-registry binary: apt-get install docker-registry (scripts/install-docker.sh does)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the cloud push tests: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\nhttp:\n  addr: {address}\n"
    )
    with serving([binary, "serve", str(config)], f"http://{address}/v2/"):
        yield address


@pytest.mark.docker
@pytest.mark.slow
def test_cloud_train_pushes_the_image_and_starts_the_job(aws, registry):
    image_id = (
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .removeprefix("sha256:")
    )
    job = "procgen-rl-pushed"
    put_job_log(aws, job, metric_line(sample_metrics()))
    result = run_cli(
        "cloud",
        "train",
        "experiments/smoke.yaml",
        "--instance-type",
        "ml.c5.xlarge",
        "--instance-count",
        "2",
        "--job-name",
        job,
        "--wait",
        "--set",
        "env_config.env_name=starpilot",
        timeout=900,
        env={cloud.ROLE_ENV: ROLE_NAME, cloud.BUCKET_ENV: BUCKET, cloud.REGISTRY_ENV: registry},
    )
    tag = f"{__version__}-cpu-{image_id[:12]}"
    subprocess.run(["docker", "rmi", f"{registry}/procgen-rl:{tag}"], capture_output=True)  # the push's local tag
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"{registry}/procgen-rl:{tag}" in result.stdout and "creating ECR repository procgen-rl" in result.stdout
    assert metric_line(sample_metrics()) in result.stdout  # --wait streamed the job's log
    assert f"Run:         s3://{BUCKET}/procgen-rl/{job}" in result.stdout
    assert "testing" not in result.stdout + result.stderr  # no credentials in the output
    tags = json.loads(urllib.request.urlopen(f"http://{registry}/v2/procgen-rl/tags/list").read())["tags"]
    assert tag in tags  # the real registry holds the image
    repositories = aws.session.client("ecr").describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repositories] == ["procgen-rl"]
    job_config = describe(aws, job)
    assert job_config["AlgorithmSpecification"]["TrainingImage"] == f"{registry}/procgen-rl:{tag}"
    assert job_config["ResourceConfig"]["InstanceCount"] == 2


@pytest.mark.docker
def test_dry_run_picks_the_gpu_image_for_a_gpu_instance_type(aws, registry):
    result = run_cli(
        "cloud",
        "train",
        "experiments/smoke.yaml",
        "--instance-type",
        "ml.p3.2xlarge",
        "--dry-run",
        "--role",
        ROLE_NAME,
        "--bucket",
        BUCKET,
        timeout=300,
    )
    gpu_image = f"procgen-rl:{__version__}-gpu"
    if subprocess.run(["docker", "image", "inspect", gpu_image], capture_output=True).returncode:
        assert_one_line_error(
            result,
            f"image {gpu_image} not found: build it with `docker build -f docker/Dockerfile --build-arg VARIANT=gpu "
            f"-t {gpu_image} .`",
        )
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        request = json.loads(result.stdout[: result.stdout.index("\nDry run:")])
        assert f"/procgen-rl:{__version__}-gpu-" in request["AlgorithmSpecification"]["TrainingImage"]
        # the layout its host will choose, as `procgen-rl plan` prints it: 8 envs, one GPU runner
        assert "algo-1 (ml.p3.2xlarge: 8 CPUs, 1 GPU of 16 GiB): learner, 1 env runner" in result.stdout
        assert aws.sagemaker.list_training_jobs()["TrainingJobSummaries"] == []


@pytest.mark.docker
@pytest.mark.slow
def test_cloud_benchmark_pushes_the_image_once(aws, registry, tmp_path):
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    tag = f"{__version__}-cpu-{image_id.removeprefix('sha256:')[:12]}"
    suite, directory = write_suite(tmp_path / "tiny.yaml", [0]), tmp_path / "suite"
    result = cloud_benchmark(suite, directory, "--max-concurrent", "2", env={cloud.REGISTRY_ENV: registry})
    subprocess.run(["docker", "rmi", f"{registry}/procgen-rl:{tag}"], capture_output=True)  # the push's local tag
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert result.stdout.count(f"pushing {IMAGE} to {registry}/procgen-rl:{tag}") == 1
    for job in json.loads((directory / "jobs.json").read_text()).values():
        assert describe(aws, job["job"])["AlgorithmSpecification"]["TrainingImage"] == f"{registry}/procgen-rl:{tag}"
