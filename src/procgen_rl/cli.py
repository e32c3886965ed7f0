"""`procgen-rl`: train, rollout, and SageMaker local mode from the command line.

User errors (bad config, missing checkpoint) print one `error:` line and exit 2, before Ray
starts; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from procgen_rl import __version__
from procgen_rl.errors import UserError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="procgen-rl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train an experiment, or resume a run",
        description="Train EXPERIMENT into a new run directory, or continue one with --resume.")
    train.add_argument("experiment", nargs="?", help="experiment YAML, e.g. experiments/ppo-8m.yaml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a value, e.g. --set env_config.env_name=starpilot (repeatable)")
    train.add_argument("--run-dir", help="run directory (default: $RESULTS_DIR/<name>-<timestamp>, "
                                         "RESULTS_DIR defaults to results/)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue RUN_DIR from its latest checkpoint with its saved config; "
                            "steps, iterations and wall time continue, --set may change stop limits")

    rollout = commands.add_parser(
        "rollout", help="evaluate a checkpoint: returns, normalized score, video",
        description="Run episodes on the training levels and on unseen levels; print both and the "
                    "generalization gap; write summary.json and episode.mp4.")
    rollout.add_argument("run_or_checkpoint", help="a run directory (latest checkpoint) or a checkpoint_* directory")
    rollout.add_argument("--episodes", type=int, default=16, help="episodes per split (default 16)")
    rollout.add_argument("--out", help="output directory (default: <run>/rollout)")
    rollout.add_argument("--no-video", action="store_true", help="skip the video")
    rollout.add_argument("--seed", type=int, default=12345)
    local = commands.add_parser(
        "sagemaker-local", help="run EXPERIMENT as a SageMaker training job in local mode (Docker)",
        description="Run the image as SageMaker would, with the SageMaker Python SDK's local mode: "
                    "INSTANCES containers (Ray head on algo-1, workers on the others), offline.")
    local.add_argument("experiment", help="an experiment under experiments/ (the image holds a copy)")
    local.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="passed to the job as hyperparameters (same keys as train --set)")
    local.add_argument("--instances", type=int, default=1, help="containers (hosts), default 1")
    local.add_argument("--image", default=f"procgen-rl:{__version__}-cpu", help="image (default: %(default)s)")
    local.add_argument("--run-dir", help="where model/ and output/ are unpacked "
                                         "(default: $RESULTS_DIR/<name>-sagemaker-<timestamp>)")
    return parser


def run_sagemaker_local(args: argparse.Namespace) -> None:
    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.local_mode import run_local_job
    from procgen_rl.run_dir import new_run_path

    if args.instances < 1:
        raise UserError(f"--instances must be >= 1, got {args.instances}")
    overrides = parse_set_args(args.overrides)
    experiment = load_experiment(args.experiment, overrides)  # fail here, not in a container
    run_path = Path(args.run_dir) if args.run_dir else new_run_path(f"{experiment.name}-sagemaker")
    run_local_job(args.experiment, overrides, args.image, args.instances, run_path)
    print(f"\nResults:     {run_path}/output/data/run (config, TensorBoard events, steps_by_host.json)")
    print(f"Model:       {run_path}/model (config.yaml, final checkpoint, policy.pt2)")
    print(f"Evaluate:    procgen-rl rollout {run_path}/model")


def run_train(args: argparse.Namespace) -> None:
    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.run_dir import RunDir, new_run_path

    overrides = parse_set_args(args.overrides)
    if args.resume:
        if args.experiment or args.run_dir:
            raise UserError("--resume RUN_DIR trains the run's saved config: give no EXPERIMENT or --run-dir")
        run = RunDir(Path(args.resume))
        if not run.config_path.is_file():
            raise UserError(f"{run.path}: no config.yaml; not a procgen-rl run directory")
        experiment = load_experiment(run.config_path, overrides)
    else:
        if not args.experiment:
            raise UserError("give an EXPERIMENT file (see experiments/) or --resume RUN_DIR")
        experiment = load_experiment(args.experiment, overrides)
        run = RunDir(Path(args.run_dir) if args.run_dir else new_run_path(experiment.name))
        if run.checkpoints():
            raise UserError(f"{run.path} already holds checkpoints: continue it with --resume {run.path}, "
                            "or choose another --run-dir")

    from procgen_rl.trainer import train  # imports Ray: only once the config is known to be good

    outcome = train(experiment, run, resume=bool(args.resume))
    state = outcome.state
    print(f"\nStopped by {outcome.stop_reason} after {state.iteration} iteration{'s' * (state.iteration != 1)}, "
          f"{state.timesteps_total:,} env steps, {state.time_total_s:.0f} s of training.")
    print(f"Results:     {run.path}")
    print(f"Checkpoint:  {outcome.checkpoint}")
    print(f"TensorBoard: tensorboard --logdir {run.path} --host 127.0.0.1")
    print(f"Evaluate:    procgen-rl rollout {run.path}")
    budget = experiment.stop.timesteps_total
    if outcome.stop_reason != "timesteps_total" and budget:
        rate = state.timesteps_total / state.time_total_s if state.time_total_s else 0.0
        left = f", about {(budget - state.timesteps_total) / rate / 3600:.1f} h more at {rate:.0f} steps/s" if rate else ""
        print(f"Full budget: procgen-rl train --resume {run.path} --set stop.time_total_s=0 "
              f"(to {budget:,} steps{left})")


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
    try:
        {"train": run_train, "rollout": run_rollout, "sagemaker-local": run_sagemaker_local}[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
