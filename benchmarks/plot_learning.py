"""Several learning runs in one PNG: a panel per game, a colour per implementation, a line per seed.

Each SOURCE is an --out of benchmarks/learning.py (its lean.csv and the harness run beside it), a
directory of harness runs (a suite's of `procgen-rl benchmark`, or one run's), or a learning
record of benchmarks/records/ that keeps its curve. Each run's game, algorithm and seed come from
its config.yaml; a lean.csv's from the harness run beside it, which trained the same experiment;
a record's from its experiment and overrides. --steps cuts every curve at one budget (at its
first point past it), so that runs of different lengths compare at equal env steps.

Usage: python benchmarks/plot_learning.py --out learning.png SOURCE [SOURCE ...] [--steps N] [--title TEXT]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import textwrap
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import yaml

from procgen_rl.config import load_experiment, parse_set_args
from procgen_rl.errors import UserError
from procgen_rl.report import collect
from records import REPO, read_learning

Curve = list[tuple[int, float]]  # (env steps, mean return)
LINESTYLES = ("-", "--", ":", "-.")  # one a seed, in seed order


def with_returns(points: Iterable[tuple[int, float]]) -> Curve:
    """The points that have a mean return: an iteration before the first finished episode has none (NaN)."""
    return [(step, mean_return) for step, mean_return in points if not math.isnan(mean_return)]


def read_lean_csv(path: Path) -> Curve:
    """A lean PPO's or PPG's --csv: its mean return after each iteration."""
    with open(path, newline="") as f:
        return with_returns((int(row["step"]), float(row["mean_return"])) for row in csv.DictReader(f))


def curves_of(sources: list[Path]) -> dict[str, dict[tuple[str, int], Curve]]:
    """game -> (implementation, seed) -> curve, for every run under the directories and every record."""
    curves: dict[str, dict[tuple[str, int], Curve]] = defaultdict(dict)
    for record in [source for source in sources if source.suffix == ".json"]:
        what, curve = read_learning(record)
        try:
            experiment = load_experiment(REPO / what["experiment"], parse_set_args(what["overrides"]))
        except UserError as e:
            raise SystemExit(f"error: {record}: its experiment in this checkout: {e}") from None
        name = what["implementation"]
        name = f"harness {experiment.algorithm.name}" if name == "harness" else name
        curves[experiment.env_config.env_name][name, experiment.seed] = curve
    runs, _ = collect([source for source in sources if source.suffix != ".json"])
    for run in runs:
        algorithm = yaml.safe_load((run.path / "config.yaml").read_text())["algorithm"]["name"]
        rows = [row for row in run.rows if "episode_reward_mean" in row]
        curves[run.game][f"harness {algorithm}", run.seed] = [
            (int(row["timesteps_total"]), float(row["episode_reward_mean"])) for row in rows
        ]
        lean_csv = run.path.parent / "lean.csv"
        if run.path.name == "harness" and lean_csv.is_file():
            curves[run.game][f"lean {algorithm}", run.seed] = read_lean_csv(lean_csv)
    return curves


def cut(curve: Curve, steps: int) -> Curve:
    """The curve up to its first point at or past `steps`: an iteration can overshoot a budget."""
    ends = [i for i, (step, _) in enumerate(curve) if step >= steps]
    return curve[: ends[0] + 1] if ends else curve


def plot(curves: dict[str, dict[tuple[str, int], Curve]], steps: int | None, title: str, path: Path) -> None:
    """game -> (implementation, seed) -> curve into one PNG, cut at `steps` when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    implementations = sorted({name for runs in curves.values() for name, _ in runs})
    colors = dict(zip(implementations, itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])))
    seeds = sorted({seed for runs in curves.values() for _, seed in runs})
    styles = dict(zip(seeds, itertools.cycle(LINESTYLES)))
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (game, runs) in zip(axes[0], sorted(curves.items()), strict=True):
        for (name, seed), curve in sorted(runs.items()):
            shown = curve if steps is None else cut(curve, steps)
            ax.plot(
                [s for s, _ in shown],
                [r for _, r in shown],
                color=colors[name],
                linestyle=styles[seed],
                marker=".",
                label=f"{name}, seed {seed}",
            )
        ax.set(title=game, xlabel="env steps", ylabel="mean return (last 100 episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(title, 90 * len(curves))), fontsize="small")  # long --set lists wrap
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--steps", type=int, help="cut every curve at this many env steps")
    parser.add_argument("--title", default="", help="above the panels: what was run")
    args = parser.parse_args()
    try:
        curves = curves_of(args.sources)
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
    plot(curves, args.steps, args.title, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
