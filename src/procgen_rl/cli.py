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
from typing import TYPE_CHECKING, Any

from procgen_rl import envvars
from procgen_rl.errors import UserError
from procgen_rl.launchers import BACKENDS, DEFAULT_IMAGE, Job, LaunchOptions, Outcome
from procgen_rl.signals import Stopped, TwoStageStop, exit_code

if TYPE_CHECKING:
    from procgen_rl.config import Experiment
    from procgen_rl.launchers.cloud import CloudOptions, InstanceGroup
    from procgen_rl.run_dir import RunDir

EXIT_USER_ERROR = 2


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE`, repeatable: the dotted overrides every command that takes an experiment reads."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


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
    add_set_argument(train, "override a value, e.g. --set env_config.env_name=starpilot (repeatable)")
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
    train.add_argument("--worker-cpus", type=float, help=WORKER_CPUS_HELP)
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
    benchmark = commands.add_parser(
        "benchmark",
        help="train a suite: one experiment over a grid of games, seeds and other overrides",
        description="Train every cell of SUITE (experiment, budget, set, grid: docs/benchmarks.md) as a "
        "Ray Tune trial on a local Ray, or on the cluster in RAY_ADDRESS; each cell is an ordinary run "
        "directory in the suite directory. Given an existing suite directory (--dir), finished cells "
        "are skipped and interrupted ones resume from their checkpoints.",
    )
    benchmark.add_argument("suite", help="suite YAML, e.g. benchmarks/suites/smoke.yaml")
    benchmark.add_argument(
        "--dir", help="suite directory (default: $RESULTS_DIR/<suite>-<timestamp>); one of the same suite continues"
    )
    benchmark.add_argument(
        "--max-concurrent", type=int, help="cells trained at once (default: as many as the Ray cluster fits)"
    )
    report = commands.add_parser(
        "report",
        help="a suite's scores and curves against the Procgen paper's PPO: report.md, PNGs, scores.json",
        description="Read the runs under each DIR (suite directories of `benchmark`, or run directories) and "
        "write report.md, a curves-<game>.png per game and scores.json into the first DIR: final normalized "
        "train and test scores per game, the generalization gap, mean/median/IQM over games with "
        "stratified-bootstrap 95%% intervals, the paper's PPO at the same step count. A cloud suite's runs "
        "are fetched from S3 first. Needs matplotlib "
        "(pip install 'procgen-rl[bench]'; `make venv` installs it).",
    )
    report.add_argument("dirs", nargs="+", metavar="DIR", help="suite or run directories; several are compared")
    report.add_argument("--out", help="where the report goes (default: the first DIR)")
    report.add_argument("--region", help="a cloud suite's AWS region (default: AWS_REGION, the profile's)")
    report.add_argument("--profile", help="a cloud suite's AWS profile (default: AWS_PROFILE)")
    cluster = commands.add_parser(
        "cluster",
        help="a compose cluster that waits for your own drivers: up, down, logs",
        description="Start a Ray head container and WORKERS worker containers of IMAGE and leave "
        "them up; attach drivers with `docker compose -p procgen-rl exec ray-head "
        "procgen-rl train ...` or Ray Client on 127.0.0.1:10001.",
    )
    cluster.add_argument("action", choices=("up", "down", "logs"))
    cluster.add_argument("--workers", type=int, default=2, help="worker containers (default 2)")
    cluster.add_argument("--worker-cpus", type=float, help=WORKER_CPUS_HELP)
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
    plan = commands.add_parser(
        "plan",
        help="print the layout of EXPERIMENT: on this machine, or on SageMaker instance types",
        description="Print where EXPERIMENT's work goes with its resources.layout: env runners, envs, "
        "torch threads and GPUs per host, and the learner. On this machine as `train --backend native` "
        "places it, or on a SageMaker job's instance types (procgen_rl/instance_types.py) as `cloud train` "
        "would run it. Starts nothing.",
    )
    plan.add_argument("experiment", help="experiment YAML, e.g. experiments/ppo-8m.yaml")
    add_set_argument(plan, "as train --set")
    add_instance_arguments(plan, None, "a SageMaker instance type, e.g. ml.p3.2xlarge (default: this machine)")
    plan.add_argument(
        "--all-instance-types",
        action="store_true",
        help="a Markdown table of the layout on one host of each instance type in the table (docs/layout.md)",
    )
    add_cloud_parser(commands)
    return parser


WORKER_CPUS_HELP = "compose: each worker container's CPU limit (default: this machine's CPUs / --workers)"


def add_instance_arguments(parser: argparse.ArgumentParser, instance_type: str | None, default_help: str) -> None:
    """A SageMaker job's instances: one type, or a GPU learner group plus a CPU rollout group."""
    parser.add_argument("--instance-type", default=instance_type, help=default_help)
    parser.add_argument("--instance-count", type=int, default=1, help="hosts of --instance-type (default 1)")
    parser.add_argument("--gpu-instances", type=int, default=0, help="hosts in the GPU learner group (Ray head)")
    parser.add_argument("--cpu-instances", type=int, default=0, help="hosts in the CPU rollout group")
    parser.add_argument("--gpu-instance-type", default="ml.g4dn.xlarge", help="default: %(default)s")
    parser.add_argument("--cpu-instance-type", default="ml.c5.4xlarge", help="default: %(default)s")


def instance_groups(args: argparse.Namespace) -> tuple[InstanceGroup, ...]:
    from procgen_rl.launchers import cloud

    return cloud.instance_groups(
        args.instance_type,
        args.instance_count,
        args.gpu_instances,
        args.cpu_instances,
        args.gpu_instance_type,
        args.cpu_instance_type,
    )


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
    add_set_argument(train, "passed to the job as hyperparameters (same keys as train --set)")
    add_job_arguments(train)
    train.add_argument("--job-name", help="default: procgen-rl-<experiment>-<UTC timestamp>")
    train.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    train.add_argument(
        "--dry-run", action="store_true", help="print the CreateTrainingJob request; push and start nothing"
    )
    benchmark = actions.add_parser(
        "benchmark",
        help="a suite's cells as SageMaker training jobs, a few at a time, followed until all end",
        description="Push the image once, then start each cell of SUITE (docs/benchmarks.md) as one training "
        "job like `cloud train` (its overrides as hyperparameters), at most --max-concurrent at once, and "
        "follow them until all have ended. The suite directory's jobs.json names each cell's job: a rerun "
        "with --dir follows running jobs, skips completed ones and restarts failed ones; `procgen-rl report "
        "DIR` fetches the runs from S3.",
    )
    benchmark.add_argument("suite", help="suite YAML whose experiment is under experiments/ (the image holds a copy)")
    benchmark.add_argument("--dir", help="suite directory (default: $RESULTS_DIR/<suite>-<timestamp>)")
    benchmark.add_argument(
        "--max-concurrent", type=int, default=2, help="jobs running at once: your account's quota (default 2)"
    )
    benchmark.add_argument(
        "--poll", type=float, default=60.0, help="seconds between DescribeTrainingJob calls (default 60)"
    )
    add_job_arguments(benchmark)
    benchmark.add_argument("--image-uri", help="an image already in the registry: run it, push nothing")
    benchmark.add_argument(
        "--dry-run", action="store_true", help="print each cell's job name and hyperparameters; start nothing"
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


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how a SageMaker job runs: `cloud train` and `cloud benchmark` take the same."""
    from procgen_rl.launchers import cloud

    add_instance_arguments(parser, "ml.g4dn.xlarge", "default: %(default)s")
    parser.add_argument("--no-spot", dest="spot", action="store_false", help="on-demand instead of spot")
    parser.add_argument(
        "--max-run", type=int, default=cloud.DEFAULT_MAX_RUN_S, help="seconds of training at most (default %(default)s)"
    )
    parser.add_argument(
        "--max-wait", type=int, help="spot: seconds of training + waiting for capacity (default 2 x --max-run)"
    )
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's)")
    parser.add_argument("--profile", help="AWS profile (default: AWS_PROFILE)")
    parser.add_argument("--role", help=f"SageMaker execution role, ARN or name (default: ${cloud.ROLE_ENV})")
    parser.add_argument("--bucket", help=f"S3 bucket for checkpoints, events, model (default: ${cloud.BUCKET_ENV})")
    parser.add_argument("--prefix", default=cloud.DEFAULT_PREFIX, help="S3 key prefix (default: %(default)s)")
    parser.add_argument(
        "--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE", help="a tag on the job (repeatable)"
    )
    parser.add_argument("--image", help="local image to push (default: procgen-rl:<version>-cpu|gpu by instance type)")
    parser.add_argument("--repository", default=cloud.DEFAULT_REPOSITORY, help="ECR repository (default: %(default)s)")
    parser.add_argument(
        "--registry",
        help=f"push to this registry instead of ECR's (default: ${cloud.REGISTRY_ENV}; for mirrors and tests)",
    )


def cloud_options(args: argparse.Namespace, **command: Any) -> CloudOptions:
    """The options `add_job_arguments` parsed, plus the command's own (`command`)."""
    from procgen_rl.launchers import cloud

    tags = dict(tag.partition("=")[::2] for tag in args.tags)
    if "" in tags or any("=" not in tag for tag in args.tags):
        raise UserError(f"--tag: expected KEY=VALUE, got {' '.join(args.tags)}")
    return cloud.CloudOptions(
        instance_groups(args),
        region=args.region,
        profile=args.profile,
        role=args.role,
        bucket=args.bucket,
        prefix=args.prefix,
        spot=args.spot,
        max_run=args.max_run,
        max_wait=args.max_wait,
        tags=tags,
        image=args.image,
        repository=args.repository,
        registry=args.registry,
        dry_run=args.dry_run,
        **command,
    )


def run_cloud_benchmark(args: argparse.Namespace) -> int:
    from procgen_rl.launchers import cloud_suite
    from procgen_rl.suite import load_suite, new_directory

    suite = load_suite(args.suite)
    directory = Path(args.dir) if args.dir else new_directory(suite)
    options = cloud_options(args, image_uri=args.image_uri)
    try:
        statuses = cloud_suite.run(suite, directory, options, args.max_concurrent, args.poll)
    except KeyboardInterrupt:
        print(
            f"\nStopped following; started jobs go on in SageMaker. Follow them again: "
            f"procgen-rl cloud benchmark {args.suite} --dir {directory}",
            file=sys.stderr,
        )
        return 130
    if args.dry_run:
        print(f"\nDry run: nothing pushed or started; {len(statuses)} jobs would start.")
        return 0
    completed = sum(state == "Completed" for state in statuses.values())
    print(f"\nSuite {suite.name}: {completed} of {len(statuses)} jobs completed, in {directory}")
    for cell, state in statuses.items():
        if state != "Completed":
            print(f"  {cell}: {state}")
    print(f"Report: procgen-rl report {directory}   (fetches each cell's run from S3)")
    return 0 if completed == len(statuses) else 1


def run_cloud_train(args: argparse.Namespace) -> None:
    from procgen_rl.config import parse_set_args, read_experiment
    from procgen_rl.launchers import cloud
    from procgen_rl.layout import plan_text

    overrides = parse_set_args(args.overrides)
    experiment, explicit = read_experiment(args.experiment, overrides)
    job = Job(experiment, args.experiment, overrides, explicit, run=None)
    options = cloud_options(args, name=args.job_name, wait=args.wait)
    submitted = cloud.launch(job, options)
    spec = submitted.spec
    if args.dry_run:
        print(json.dumps(cloud.redacted(submitted.request), indent=2))
        print(f"\nDry run: nothing pushed or started. Job {spec.name} would write to {spec.run_uri}")
        print(f"Its hosts would place the work as `procgen-rl plan` shows:\n{plan_text(submitted.layout)}")
        return
    print(f"\n{plan_text(submitted.layout)}")
    print(f"Job:         {spec.summary}")
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


def run_cloud(args: argparse.Namespace) -> int | None:
    return {"train": run_cloud_train, "benchmark": run_cloud_benchmark, "fetch": run_cloud_fetch}[args.cloud_command](
        args
    )


def resolve_run(args: argparse.Namespace) -> Job:
    """The job train's arguments ask for, resolved and checked before anything starts."""
    from procgen_rl.config import parse_set_args, read_experiment
    from procgen_rl.run_dir import RunDir, interrupted_run, is_checkpoint, load_state, new_run_path, resolve_checkpoint

    overrides = parse_set_args(args.overrides)
    if args.resume and (args.experiment or args.run_dir):
        raise UserError("--resume RUN_DIR trains the run's saved config: give no EXPERIMENT or --run-dir")
    if not args.resume and not args.experiment:
        raise UserError("give an EXPERIMENT file (see experiments/) or --resume RUN_DIR")
    if args.experiment:
        experiment, explicit = read_experiment(args.experiment, overrides)
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
            return Job(experiment, args.experiment, overrides, explicit, run, resume=False)
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
    # Every key of a run's config.yaml is set: a resumed run keeps its layout unless --set changes it.
    experiment, explicit = read_experiment(run.config_path, overrides)
    return Job(experiment, str(run.config_path), overrides, explicit, run, resume=True, resume_from=resume_from)


def run_train(args: argparse.Namespace) -> None:
    from procgen_rl import launchers

    job = resolve_run(args)
    backend = launchers.resolve_backend(args.backend)
    options = LaunchOptions(
        image=args.image, workers=args.workers, worker_cpus=args.worker_cpus, instances=args.instances
    )
    print_summary(launchers.launch(backend, job, options), job.experiment, backend)


def print_summary(outcome: Outcome, experiment: Experiment, backend: str) -> None:
    """Where the results are and how to go on (any backend)."""
    from procgen_rl.reporting import format_duration

    stopped, run = outcome.stopped, outcome.run
    iterations = stopped["iteration"]
    print(
        f"\nStopped by {stopped['stop_reason']} after {iterations} iteration{'s' * (iterations != 1)}, "
        f"{stopped['timesteps_trained']:,} env steps trained, {stopped['time_total_s']:.0f} s of training."
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
    rate = stopped["timesteps_trained"] / stopped["time_total_s"] if stopped["time_total_s"] else 0.0
    left = (
        f", about {format_duration((budget - stopped['timesteps_trained']) / rate)} more at {rate:,.0f} steps/s"
        if rate
        else ""
    )
    on = " --backend compose" if backend == "compose" else ""
    print(
        f"Full budget: procgen-rl train --resume {run.path} --set stop.time_total_s=0{on} (to {budget:,} steps{left})"
    )


def run_benchmark(args: argparse.Namespace) -> int:
    from procgen_rl.launchers import tune_suite
    from procgen_rl.suite import load_suite, new_directory

    suite = load_suite(args.suite)
    directory = Path(args.dir) if args.dir else new_directory(suite)
    outcomes = tune_suite.run(suite, directory, args.max_concurrent)
    done = sum(outcome.finished for outcome in outcomes)
    print(f"\nSuite {suite.name}: {done} of {len(outcomes)} cells finished in {directory}")
    for outcome in outcomes:
        left = "" if outcome.finished else ", not finished"
        error = f"; {outcome.error}" if outcome.error else ""
        print(f"  {outcome.cell.cell.name:32s} {cell_progress(outcome.cell.run)}{left}{error}")
    print(f"Report:   procgen-rl report {directory}")
    if done < len(outcomes):
        print(f"Continue: procgen-rl benchmark {args.suite} --dir {directory}")
        return 1
    return 0


def run_report(args: argparse.Namespace) -> None:
    from procgen_rl.launchers.cloud_suite import JOBS_FILE, fetch
    from procgen_rl.report import interval, write

    directories = [Path(d) for d in args.dirs]
    fetched = []
    for directory in directories:
        if (directory / JOBS_FILE).is_file():  # a cloud suite: its runs are in S3
            print(f"{directory}: fetching each cell's run from S3", flush=True)
            fetched += fetch(directory, args.region, args.profile)
    path, scores, notes = write(directories, Path(args.out) if args.out else None, fetched)
    for note in notes:
        print(f"left out: {note}")
    print(f"{scores['runs']} runs of {len(scores['games'])} games; normalized scores over games (95% intervals):")
    for variant, splits in scores["aggregates"].items():
        for split, row in splits.items():
            print(
                f"  {variant:24s} {split:5s} " + "  ".join(f"{k} {interval(row[k])}" for k in ("mean", "median", "IQM"))
            )
    print(f"Report: {path} (scores.json and curves-<game>.png beside it)")


def cell_progress(run: RunDir) -> str:
    """`2 iterations, 1,038 env steps` from its last clean stop or its newest checkpoint."""
    from procgen_rl.run_dir import STATE_FILE

    latest = run.latest_checkpoint()
    source = run.stopped_path if run.stopped_path.is_file() else latest / STATE_FILE if latest else None
    if source is None:
        return "no checkpoint yet"
    state = json.loads(source.read_text())
    iterations = state["iteration"]
    return f"{iterations} iteration{'s' * (iterations != 1)}, {state['timesteps_total']:,} env steps"


def run_cluster(args: argparse.Namespace) -> None:
    from procgen_rl.launchers import compose
    from procgen_rl.launchers.docker_engine import check_docker

    if args.action == "up":
        check_docker(args.image)
    cluster = compose.Cluster(args.image, args.workers, head_slots=0 if args.workers else 1, cpus=args.worker_cpus)
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


def run_plan(args: argparse.Namespace) -> None:
    from procgen_rl.config import parse_set_args, read_experiment
    from procgen_rl.layout import place_on_this_machine, plan_text

    overrides = parse_set_args(args.overrides)
    if args.all_instance_types:
        print(instance_types_table(args.experiment, overrides))
        return
    experiment, explicit = read_experiment(args.experiment, overrides)
    if args.instance_type or args.gpu_instances or args.cpu_instances:
        from procgen_rl.launchers import cloud
        from procgen_rl.runtime.sagemaker import job_layout

        groups = instance_groups(args)
        layout = job_layout(experiment, explicit, cloud.resource_config(groups))
        where = " + ".join(f"{g.count} x {g.instance_type}" for g in groups)
    else:
        layout, where = place_on_this_machine(experiment, explicit), "this machine"
    print(f"{experiment.name} on {where}:\n{plan_text(layout)}")


def instance_types_table(experiment_file: str, overrides: dict) -> str:
    """The layout on one host of each instance type in the table, as Markdown."""
    from procgen_rl.config import read_experiment
    from procgen_rl.instance_types import INSTANCE_TYPES
    from procgen_rl.launchers import cloud
    from procgen_rl.runtime.sagemaker import job_layout

    rows = [
        "| instance type | vCPUs | GPUs | env runners x envs | CPUs per runner | runners' inference | learner |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, kind in INSTANCE_TYPES.items():
        experiment, explicit = read_experiment(experiment_file, overrides)
        layout = job_layout(experiment, explicit, cloud.resource_config((cloud.InstanceGroup("one", name, 1),)))
        gpus = f"{kind.gpus} x {kind.gpu} {kind.gpu_memory_gib} GB" if kind.gpus else "-"
        share = layout.gpus_per_env_runner
        inference = f"GPU, {share:g} each" if share else "host GPU" if layout.infer_on_host_gpu else "CPU"
        runners = f"{layout.num_env_runners} x {layout.envs_per_env_runner}"
        learner = f"{'GPU' if layout.learner_device == 'auto' else 'CPU'}, {layout.learner_threads} threads"
        rows.append(
            f"| {name} | {kind.vcpus} | {gpus} | {runners} | {layout.cpus_per_env_runner} | {inference} | {learner} |"
        )
    return "\n".join(rows)


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
        "benchmark": run_benchmark,
        "report": run_report,
        "cluster": run_cluster,
        "node": run_node,
        "plan": run_plan,
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
