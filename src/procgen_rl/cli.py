"""`procgen-rl`: train on any backend, rollout, compose clusters and SageMaker jobs from the command line.

The CLI parses and resolves the experiment once, checks it, then hands it to a launcher
(procgen_rl.launchers). User errors (bad config, missing checkpoint, a path the filesystem
refuses) print one `error:` line and exit 2, before Ray starts where they can be found there; a
stop signal exits quietly with 130 or 143 (procgen_rl.signals); anything else is a bug and keeps
its traceback (exit 1). docs/errors.md lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from procgen_rl import envvars
from procgen_rl.errors import UserError
from procgen_rl.launchers import BACKENDS, DEFAULT_IMAGE, Job, LaunchOptions, Outcome
from procgen_rl.signals import Stopped, TwoStageStop, exit_code

if TYPE_CHECKING:
    from procgen_rl.config import Experiment

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="procgen-rl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train an experiment, or resume a run",
        description="Train EXPERIMENT into a new run directory, or continue one with --resume: in this "
        "process (native), on a compose cluster of the image's containers (compose), or as a "
        "SageMaker training job in local mode (sagemaker).",
    )
    train.add_argument("experiment", nargs="?", help="experiment YAML, e.g. experiments/ppo-8m.yaml")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value, e.g. --set env_config.env_name=starpilot (repeatable)",
    )
    train.add_argument(
        "--run-dir", help="run directory (default: $RESULTS_DIR/<name>-<timestamp>, RESULTS_DIR defaults to results/)"
    )
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its latest checkpoint with its saved config, or from "
        "RUN_DIR/checkpoints/checkpoint_N (newer ones are set aside); steps, iterations and wall "
        "time continue, --set may change stop limits",
    )
    train.add_argument(
        "--resume-interrupted",
        action="store_true",
        help="if the newest run of EXPERIMENT in $RESULTS_DIR was interrupted (killed or "
        "crashed: checkpoints but no clean stop), continue it instead of a new run",
    )
    train.add_argument(
        "--backend",
        choices=(*BACKENDS, "auto"),
        default="native",
        help="native: this process; compose: a Ray head container + --workers worker "
        "containers of --image; sagemaker: SageMaker local mode, --instances hosts; "
        "auto: compose when a Docker engine answers, else native (default: %(default)s)",
    )
    train.add_argument("--workers", type=int, default=2, help="compose: worker containers (default 2)")
    train.add_argument("--instances", type=int, default=1, help="sagemaker: hosts of the job (default 1)")
    train.add_argument("--image", default=DEFAULT_IMAGE, help="compose, sagemaker: the image (default: %(default)s)")

    rollout = commands.add_parser(
        "rollout",
        help="evaluate a checkpoint: returns, normalized score, video",
        description="Run episodes on the training levels and on unseen levels; print both and the "
        "generalization gap; write summary.json and episode.mp4.",
    )
    rollout.add_argument("run_or_checkpoint", help="a run directory (latest checkpoint) or a checkpoint_* directory")
    rollout.add_argument("--episodes", type=int, default=16, help="episodes per split (default 16)")
    rollout.add_argument("--out", help="output directory (default: <run>/rollout)")
    rollout.add_argument("--no-video", action="store_true", help="skip the video")
    rollout.add_argument("--seed", type=int, default=12345)
    cluster = commands.add_parser(
        "cluster",
        help="a compose cluster that waits for your own drivers: up, down, logs",
        description="Start a Ray head container and WORKERS worker containers of IMAGE and leave "
        "them up; attach drivers with `docker compose -p procgen-rl exec ray-head "
        "procgen-rl train ...` or Ray Client on 127.0.0.1:10001.",
    )
    cluster.add_argument("action", choices=("up", "down", "logs"))
    cluster.add_argument("--workers", type=int, default=2, help="worker containers (default 2)")
    cluster.add_argument("--image", default=DEFAULT_IMAGE, help="image (default: %(default)s)")
    cluster.add_argument("--no-follow", action="store_true", help="logs: print them and return")

    node = commands.add_parser(
        "node",
        help="(inside the image) run a compose cluster node: the Ray head or a worker",
        description="The command of docker/docker-compose.yml's services. The head trains the run "
        f"directory in ${envvars.HEAD_RUN} once Ray is up, and exits with the result.",
    )
    node.add_argument("role", choices=("head", "worker"))
    node.add_argument("--slots", type=int, default=1, help="env runner slots this node offers")
    node.add_argument("--head", default="ray-head", help="worker: the head's host name")
    node.add_argument(
        "--join-timeout", type=float, default=60.0, help="worker: seconds to wait for the head before failing"
    )
    add_cloud_parser(commands)
    return parser


def add_cloud_parser(commands: argparse._SubParsersAction) -> None:
    from procgen_rl.launchers import cloud

    parser = commands.add_parser(
        "cloud", help="SageMaker training jobs in your AWS account", description=cloud.__doc__.splitlines()[0]
    )
    actions = parser.add_subparsers(dest="cloud_command", required=True)
    train = actions.add_parser(
        "train",
        help="push the image to ECR and start EXPERIMENT as a SageMaker training job",
        description="Push the CPU or GPU image (picked by instance type) to ECR and start one training "
        "job: spot by default, checkpoints in S3 (a restart resumes), metrics parsed from "
        "the log. One instance type (--instance-type/--instance-count) or a GPU learner "
        "group plus a CPU rollout group (--gpu-instances/--cpu-instances).",
    )
    train.add_argument("experiment", help="an experiment under experiments/ (the image holds a copy)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to the job as hyperparameters (same keys as train --set)",
    )
    train.add_argument("--instance-type", default="ml.g4dn.xlarge", help="default: %(default)s")
    train.add_argument("--instance-count", type=int, default=1, help="hosts of --instance-type (default 1)")
    train.add_argument("--gpu-instances", type=int, default=0, help="hosts in the GPU learner group (Ray head)")
    train.add_argument("--cpu-instances", type=int, default=0, help="hosts in the CPU rollout group")
    train.add_argument("--gpu-instance-type", default="ml.g4dn.xlarge", help="default: %(default)s")
    train.add_argument("--cpu-instance-type", default="ml.c5.4xlarge", help="default: %(default)s")
    train.add_argument("--no-spot", dest="spot", action="store_false", help="on-demand instead of spot")
    train.add_argument(
        "--max-run", type=int, default=cloud.DEFAULT_MAX_RUN_S, help="seconds of training at most (default %(default)s)"
    )
    train.add_argument(
        "--max-wait", type=int, help="spot: seconds of training + waiting for capacity (default 2 x --max-run)"
    )
    train.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's)")
    train.add_argument("--profile", help="AWS profile (default: AWS_PROFILE)")
    train.add_argument("--role", help=f"SageMaker execution role, ARN or name (default: ${cloud.ROLE_ENV})")
    train.add_argument("--bucket", help=f"S3 bucket for checkpoints, events, model (default: ${cloud.BUCKET_ENV})")
    train.add_argument("--prefix", default=cloud.DEFAULT_PREFIX, help="S3 key prefix (default: %(default)s)")
    train.add_argument("--job-name", help="default: procgen-rl-<experiment>-<UTC timestamp>")
    train.add_argument(
        "--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE", help="a tag on the job (repeatable)"
    )
    train.add_argument("--image", help="local image to push (default: procgen-rl:<version>-cpu|gpu by instance type)")
    train.add_argument("--repository", default=cloud.DEFAULT_REPOSITORY, help="ECR repository (default: %(default)s)")
    train.add_argument(
        "--registry",
        help=f"push to this registry instead of ECR's (default: ${cloud.REGISTRY_ENV}; for mirrors and tests)",
    )
    train.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    train.add_argument(
        "--dry-run", action="store_true", help="print the CreateTrainingJob request; push and start nothing"
    )
    fetch = actions.add_parser(
        "fetch",
        help="download a cloud run's TensorBoard events and final model",
        description="Sync RUN/tensorboard/ into DIR/run and unpack RUN/output/model.tar.gz into DIR/model.",
    )
    fetch.add_argument("run", help="s3://bucket/prefix/job, as `cloud train` printed it")
    fetch.add_argument("dir", help="local directory")
    fetch.add_argument("--model", action="store_true", help="fail unless the final model is there")
    fetch.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's)")
    fetch.add_argument("--profile", help="AWS profile (default: AWS_PROFILE)")


def run_cloud_train(args: argparse.Namespace) -> None:
    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.launchers import cloud

    overrides = parse_set_args(args.overrides)
    job = Job(load_experiment(args.experiment, overrides), args.experiment, overrides, run=None)
    tags = dict(tag.partition("=")[::2] for tag in args.tags)
    if "" in tags or any("=" not in tag for tag in args.tags):
        raise UserError(f"--tag: expected KEY=VALUE, got {' '.join(args.tags)}")
    groups = cloud.instance_groups(
        args.instance_type,
        args.instance_count,
        args.gpu_instances,
        args.cpu_instances,
        args.gpu_instance_type,
        args.cpu_instance_type,
    )
    options = cloud.CloudOptions(
        groups,
        region=args.region,
        profile=args.profile,
        role=args.role,
        bucket=args.bucket,
        prefix=args.prefix,
        spot=args.spot,
        max_run=args.max_run,
        max_wait=args.max_wait,
        tags=tags,
        name=args.job_name,
        image=args.image,
        repository=args.repository,
        registry=args.registry,
        wait=args.wait,
        dry_run=args.dry_run,
    )
    submitted = cloud.launch(job, options)
    spec = submitted.spec
    if args.dry_run:
        print(json.dumps(cloud.redacted(submitted.request), indent=2))
        print(f"\nDry run: nothing pushed or started. Job {spec.name} would write to {spec.run_uri}")
        return
    print(f"\nJob:         {spec.summary}")
    print(f"Run:         {spec.run_uri}")
    print(
        f"TensorBoard: procgen-rl cloud fetch {spec.run_uri} results/{spec.name}; "
        f"tensorboard --logdir results/{spec.name}/run --host 127.0.0.1"
    )
    print(
        f"Evaluate:    procgen-rl cloud fetch {spec.run_uri} results/{spec.name} --model; "
        f"procgen-rl rollout results/{spec.name}/model   (once the job has finished)"
    )
    print(f"Status:      aws sagemaker describe-training-job --training-job-name {spec.name}")


def run_cloud_fetch(args: argparse.Namespace) -> None:
    from procgen_rl.launchers import cloud
    from procgen_rl.run_dir import check_writable, writing

    target = Path(args.dir)
    check_writable(target, "DIR", "choose another DIR")
    session = cloud.aws_session(args.region, args.profile)
    with cloud.aws_errors(), writing(target, "the fetched run"):
        fetched = cloud.fetch_run(session, args.run, target, need_model=args.model)
    print(f"Run:   {fetched.run} ({fetched.files} new or changed files)")
    print(f"Model: {fetched.model or 'not yet (the job writes it when it ends)'}")


def run_cloud(args: argparse.Namespace) -> None:
    {"train": run_cloud_train, "fetch": run_cloud_fetch}[args.cloud_command](args)


def resolve_run(args: argparse.Namespace) -> Job:
    """The job train's arguments ask for, resolved and checked before anything starts."""
    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.run_dir import RunDir, interrupted_run, is_checkpoint, load_state, new_run_path, resolve_checkpoint

    overrides = parse_set_args(args.overrides)
    if args.resume and (args.experiment or args.run_dir):
        raise UserError("--resume RUN_DIR trains the run's saved config: give no EXPERIMENT or --run-dir")
    if not args.resume and not args.experiment:
        raise UserError("give an EXPERIMENT file (see experiments/) or --resume RUN_DIR")
    if args.experiment:
        experiment = load_experiment(args.experiment, overrides)
        interrupted = interrupted_run(experiment.name) if args.resume_interrupted and not args.run_dir else None
        if interrupted is None:
            run = RunDir(Path(args.run_dir) if args.run_dir else new_run_path(experiment.name))
            if run.checkpoints():
                raise UserError(
                    f"{run.path} already holds checkpoints: continue it with --resume {run.path}, "
                    "or choose another --run-dir"
                )
            if run.path.is_dir() and any(run.path.iterdir()) and not run.config_path.is_file():
                raise UserError(f"{run.path} holds other files: a new run needs a new or empty --run-dir")
            return Job(experiment, args.experiment, overrides, run, resume=False)
        print(
            f"{interrupted.path} was interrupted: resuming it (start a new run without --resume-interrupted, "
            "or after a clean stop)",
            flush=True,
        )
        args.resume = str(interrupted.path)
    resume_from = None
    if is_checkpoint(Path(args.resume)):
        run, resume_from = resolve_checkpoint(args.resume)
        load_state(resume_from)  # a damaged one fails here, before anything is set aside
    else:
        run = RunDir(Path(args.resume))
    if not run.config_path.is_file():
        raise UserError(f"{run.path}: no config.yaml; not a procgen-rl run directory")
    if not run.checkpoints():
        raise UserError(f"{run.path}: nothing to resume, no complete checkpoint in {run.checkpoints_path}")
    if run.is_locked():
        raise UserError(f"{run.path} is being trained by another process")
    experiment = load_experiment(run.config_path, overrides)
    return Job(experiment, str(run.config_path), overrides, run, resume=True, resume_from=resume_from)


def run_train(args: argparse.Namespace) -> None:
    from procgen_rl import launchers

    job = resolve_run(args)
    backend = launchers.resolve_backend(args.backend)
    options = LaunchOptions(image=args.image, workers=args.workers, instances=args.instances)
    print_summary(launchers.launch(backend, job, options), job.experiment, backend)


def print_summary(outcome: Outcome, experiment: Experiment, backend: str) -> None:
    """Where the results are and how to go on (any backend)."""
    from procgen_rl.reporting import format_duration

    stopped, run = outcome.stopped, outcome.run
    iterations = stopped["iteration"]
    print(
        f"\nStopped by {stopped['stop_reason']} after {iterations} iteration{'s' * (iterations != 1)}, "
        f"{stopped['timesteps_total']:,} env steps, {stopped['time_total_s']:.0f} s of training."
    )
    print(f"Results:     {run.path}")
    if outcome.model:
        print(f"Model:       {outcome.model} (config.yaml, final checkpoint, policy.pt2)")
    else:
        print(f"Checkpoint:  {stopped['checkpoint']}")
    print(f"TensorBoard: tensorboard --logdir {run.path} --host 127.0.0.1")
    print(f"Evaluate:    procgen-rl rollout {outcome.model or run.path}")
    budget = experiment.stop.timesteps_total
    if stopped["stop_reason"] == "timesteps_total" or not budget or outcome.model:
        return
    rate = stopped["timesteps_total"] / stopped["time_total_s"] if stopped["time_total_s"] else 0.0
    left = (
        f", about {format_duration((budget - stopped['timesteps_total']) / rate)} more at {rate:,.0f} steps/s"
        if rate
        else ""
    )
    on = " --backend compose" if backend == "compose" else ""
    print(
        f"Full budget: procgen-rl train --resume {run.path} --set stop.time_total_s=0{on} (to {budget:,} steps{left})"
    )


def run_cluster(args: argparse.Namespace) -> None:
    from procgen_rl.launchers import compose
    from procgen_rl.launchers.docker_engine import check_docker

    if args.action == "up":
        check_docker(args.image)
    cluster = compose.Cluster(args.image, args.workers, head_slots=0 if args.workers else 1)
    if args.action == "up":
        cluster.up()
        print(
            f"compose cluster up: ray-head + {args.workers} ray-worker(s). Attach a driver:\n"
            f"  {' '.join(cluster.command)} exec ray-head procgen-rl train "
            f"{compose.PROJECT_DIR}/experiments/smoke.yaml "
            f"--set resources.num_env_runners={max(1, args.workers)} --set resources.spread_env_runners=true\n"
            "Stop it: procgen-rl cluster down"
        )
    elif args.action == "down":
        cluster.down()
        print("compose cluster down (containers and network removed)")
    else:
        cluster.compose("logs", *([] if args.no_follow else ["--follow"]), check=False)


def run_node(args: argparse.Namespace) -> int:
    from procgen_rl.runtime import ray_nodes

    ray_nodes.require_auth_token()
    os.environ.setdefault(envvars.HOST_LABEL, socket.gethostname())  # inherited by this node's Ray workers
    if args.role == "head":
        run = os.environ.get(envvars.HEAD_RUN)
        return ray_nodes.run_head(args.slots, Path(run) if run else None)
    ray_nodes.join(args.head, args.slots, args.join_timeout)
    return 0


def run_rollout(args: argparse.Namespace) -> None:
    from procgen_rl.rollout import rollout

    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    summary = rollout(args.run_or_checkpoint, args.episodes, args.out, not args.no_video, args.seed)
    for split in ("train", "test"):
        s = summary[split]
        levels = f"{s['num_levels']} levels from {s['start_level']}" if s["num_levels"] else "unseen levels"
        score = "n/a" if s["normalized_score"] is None else f"{s['normalized_score']:.3f}"
        print(f"{split:5s} ({levels}): mean return {s['mean_return']:.2f}, normalized score {score}")
    gap = summary["generalization_gap"]
    print(f"generalization gap (train - test normalized score): {'n/a' if gap is None else f'{gap:.3f}'}")
    if "video" in summary:
        print(f"video: {summary['video']}")
    print(f"summary: {summary['summary_path']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "train": run_train,
        "rollout": run_rollout,
        "cluster": run_cluster,
        "node": run_node,
        "cloud": run_cloud,
    }
    try:
        with TwoStageStop():  # a stop signal before training or a rollout loop stops at once, quietly
            return commands[args.command](args) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Stopped as stop:
        return exit_code(stop.signum)


if __name__ == "__main__":
    sys.exit(main())
