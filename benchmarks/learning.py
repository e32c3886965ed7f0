"""Learning parity: the harness and the lean PPO (or PPG) on the same experiment, seed and step budget.

Runs benchmarks/lean_ppo.py (lean_ppg.py for PPG) and then `procgen-rl train` (the harness, as a user runs it), one
after the other so they do not share the CPU, and plots both mean-return curves (last 100
episodes, the harness's episode_reward_mean) into one PNG (benchmarks/plot_learning.py draws it;
it also puts several such runs in one).

Prints each run's final mean return and its mean over the second half of the steps (± standard
error across iterations), and writes one record per run into benchmarks/records/, as that run
ends, with its curve and the plot copied into benchmarks/figures/ (docs/learning.md). With
--lean-record, the lean run of that record (a checkout or a session earlier) is reused: the
harness alone runs, and only its record is written.

Usage: python benchmarks/learning.py experiments/ppo-8m.yaml --steps 1000000 [--out DIR] [--set KEY=VALUE ...]
       [--lean-record benchmarks/records/<date>-learning-<experiment>-lean-ppo.json]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import records
from plot_learning import Curve, plot, read_lean_csv, with_returns
from procgen_rl.config import load_experiment, parse_set_args
from procgen_rl.reporting import METRIC_PREFIX, parse_metric_line

BENCHMARKS = Path(__file__).resolve().parent
FIGURES = BENCHMARKS / "figures"


def run_harness(experiment: str, steps: int, out: Path, overrides: list[str]) -> Curve:
    """`procgen-rl train` to `steps`; the curve comes from its per-iteration metric lines."""
    sets = [arg for item in overrides for arg in ("--set", item)]
    command = [
        sys.executable,
        "-m",
        "procgen_rl.cli",
        "train",
        experiment,
        "--run-dir",
        str(out / "harness"),
        *sets,
        "--set",
        f"stop.timesteps_total={steps}",
        "--set",
        "stop.time_total_s=0",
    ]
    points = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith(METRIC_PREFIX):
                metrics = parse_metric_line(line)
                points.append((int(metrics["timesteps_total"]), metrics["episode_reward_mean"]))
    if process.returncode:
        raise SystemExit(f"harness run failed (exit {process.returncode})")
    return with_returns(points)


def lean_script(experiment: str, overrides: list[str]) -> str:
    """The lean reference of the experiment's algorithm: lean_ppg.py for PPG, else lean_ppo.py."""
    algorithm = load_experiment(experiment, parse_set_args(overrides)).algorithm.name
    return "lean_ppg.py" if algorithm == "PPG" else "lean_ppo.py"


def run_lean(experiment: str, steps: int, out: Path, overrides: list[str]) -> Curve:
    """The lean reference to `steps`; the curve comes from its CSV."""
    sets = [arg for item in overrides for arg in ("--set", item)]
    subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / lean_script(experiment, overrides)),
            experiment,
            *sets,
            "--total-timesteps",
            str(steps),
            "--csv",
            str(out / "lean.csv"),
        ],
        check=True,
    )
    return read_lean_csv(out / "lean.csv")


def recorded_lean(record: Path, what: dict[str, Any]) -> Curve:
    """The curve of a recorded lean run of this very measurement (experiment, overrides, steps)."""
    measurement, curve = records.read_learning(record)
    if measurement != what:
        raise SystemExit(f"error: --lean-record {record}: it recorded {measurement}, not this run's {what}")
    return curve


def write_lean_csv(curve: Curve, path: Path) -> None:
    """A reused lean run's curve as the lean script writes it, so that plot_learning.py reads --out
    as if the lean run had been made there."""
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([("step", "mean_return"), *curve])


def second_half(curve: Curve) -> tuple[float, float]:
    """Mean return over the second half of the steps, and its standard error across iterations
    (each iteration's 100-episode window is disjoint from the next at coinrun's episode rate)."""
    values = [r for s, r in curve if s >= curve[-1][0] / 2]
    return statistics.mean(values), statistics.stdev(values) / len(values) ** 0.5


def figures(curve: Curve) -> dict[str, Any]:
    """A run's learning figures: its final mean return, its mean over the second half of the steps, and
    its curve, so that a later learning.py can reuse the run, or a plot redraw it, from the record alone."""
    step, final = curve[-1]
    mean, stderr = second_half(curve)
    return {
        "final_step": step,
        "final_return": round(final, 2),
        "second_half_mean": round(mean, 2),
        "second_half_stderr": round(stderr, 2),
        "iterations": len(curve),
        "curve": [[s, round(r, 3)] for s, r in curve],
    }


def summarize(label: str, run: dict[str, Any], speed: str) -> None:
    print(
        f"{label:14s} final mean return {run['final_return']:6.2f} at {run['final_step']:,} steps, "
        f"second half {run['second_half_mean']:.2f} ± {run['second_half_stderr']:.2f}; {speed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps per run")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("RESULTS_DIR", "results"), time.strftime("bench-learning-%Y%m%d-%H%M%S")),
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--lean-record",
        type=Path,
        metavar="RECORD",
        help="a learning record of the lean run of this experiment, overrides and steps: its curve is reused",
    )
    args = parser.parse_args()
    experiment = load_experiment(args.experiment, parse_set_args(args.overrides))  # fails early on a bad config
    seed, lean = experiment.seed, "lean PPG" if experiment.algorithm.name == "PPG" else "lean PPO"
    what = records.measurement(args.experiment, args.overrides, steps=args.steps, implementation=lean)
    recorded = recorded_lean(args.lean_record, what) if args.lean_record else None  # fails before anything runs
    args.out.mkdir(parents=True, exist_ok=True)

    curves: dict[str, Curve] = {}
    runs = [(lean, run_lean), ("harness", run_harness)]
    if recorded is not None:  # after a change to the harness alone, or a lean run a session before
        write_lean_csv(recorded, args.out / "lean.csv")
        label = f"{lean} (recorded)"
        curves[label], runs = recorded, runs[1:]
        summarize(label, figures(recorded), f"reused from {args.lean_record}")
    png = args.out / "learning.png"
    title = " ".join([Path(args.experiment).stem, *args.overrides, f"seed {seed}, {args.steps:,} steps"])
    kept = FIGURES / f"learning-{Path(args.experiment).stem}-{time.strftime('%Y-%m-%d-%H%M%S', time.gmtime())}.png"
    for label, run in runs:
        started = time.perf_counter()
        curve = curves[label] = run(args.experiment, args.steps, args.out, args.overrides)
        seconds = time.perf_counter() - started
        if not curve:
            raise SystemExit(f"error: {label}: no episode ended in {args.steps:,} steps; give more --steps")
        # Largest finished child so far: the lean run's, then the larger of it and the harness driver's.
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        # Plotted and recorded as each run ends, so that a later run's failure keeps this one's measurement.
        plot({experiment.env_config.env_name: {(name, seed): c for name, c in curves.items()}}, None, title, png)
        shutil.copy(png, kept)
        run_figures = figures(curve)
        steps_per_s = run_figures["final_step"] / seconds
        summarize(
            label,
            run_figures,
            f"{steps_per_s:.1f} steps/s wall clock (incl. start-up), "
            f"largest process peak RSS so far {peak_mib:.0f} MiB",
        )
        records.write(
            "learning",
            what | {"implementation": label},
            run_figures
            | {
                "steps_per_s": round(steps_per_s, 1),
                "peak_rss_mib": round(peak_mib),
                "plot": os.path.relpath(kept, records.REPO),
            },
        )
    print(f"plot: {png} (and {os.path.relpath(kept)})")


if __name__ == "__main__":
    main()
