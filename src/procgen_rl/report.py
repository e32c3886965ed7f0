"""`procgen-rl report DIR...`: how good a suite's agents are, next to the Procgen paper's PPO.

Reads each run's config.yaml and metrics.jsonl under the DIRs (suite directories of `procgen-rl
benchmark`, or run directories) and writes into the first DIR (or --out):

    report.md          per game: final normalized train and test scores, the generalization gap,
                       the paper's PPO at the same step count; over games: mean, median and IQM
                       with stratified-bootstrap 95% intervals (Agarwal et al. 2021); with several
                       variants, the probability that one improves on another
    curves-<game>.png  train and test mean return against env steps, mean over seeds with a 95%
                       interval, and the paper's PPO where the setting matches (easy, 200 levels)
    scores.json        every number of report.md

Train returns are the evaluation's on training levels (eval_train_reward_mean) when the runs
evaluate, else the training episodes' (episode_reward_mean); test returns come only from the
evaluation on unseen levels (eval_test_reward_mean). Nothing is trained or evaluated here.
The PNGs need matplotlib, the `bench` extra.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from procgen_rl.errors import UserError
from procgen_rl.procgen import normalized_score
from procgen_rl.reporting import METRICS_FILE
from procgen_rl.suite import GAME_AXIS, SEED_AXIS, SUITE_FILE

TRAIN_SOURCES = ("eval_train_reward_mean", "episode_reward_mean")  # the first one a run logged
TEST_SOURCE = "eval_test_reward_mean"
SPLITS = ("train", "test")
REFERENCE_FILE = "train-procgen-ppo-easy-200.csv"
REFERENCE_SETTING = ("easy", 200)  # distribution_mode, num_levels of the paper's curves
REFERENCE = "paper PPO"
CONFIDENCE = 0.95
RESAMPLES = 10_000
FEW_POINTS = 20  # curves this short are drawn with markers (a lone evaluation is a point)
NOT_RUNS = {"checkpoints", "model", "rollout", "tune"}  # directories whose config.yaml is not a run's


@dataclass(frozen=True)
class Run:
    path: Path
    game: str
    mode: str
    num_levels: int
    seed: int
    variant: str
    rows: list[dict[str, Any]]  # metrics.jsonl, one row per iteration

    def source(self, split: str) -> str | None:
        """The metric a split's returns come from in this run, None when it logged none."""
        logged = set().union(*self.rows)
        candidates = TRAIN_SOURCES if split == "train" else (TEST_SOURCE,)
        return next((key for key in candidates if key in logged), None)

    def curve(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(env steps, mean return) of every iteration that logged the split's metric."""
        key = self.source(split)
        points = {
            row["timesteps_total"]: float(row[key])
            for row in self.rows
            if key and isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
        }
        return np.array(list(points), dtype=float), np.array(list(points.values()), dtype=float)

    @property
    def steps(self) -> int:
        return int(self.rows[-1]["timesteps_total"])

    def final(self, split: str) -> float | None:
        """The last return logged for the split."""
        _, returns = self.curve(split)
        return float(returns[-1]) if len(returns) else None

    def score(self, value: float | None) -> float | None:
        return None if value is None else normalized_score(value, self.game, self.mode)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl as the run's history: a resumed run logs again the iterations
    after its checkpoint, and those replace what was logged before (a line cut short by a kill
    is left out)."""
    rows: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or "iteration" not in row or "timesteps_total" not in row:
            continue
        while rows and rows[-1]["iteration"] >= row["iteration"]:
            rows.pop()
        rows.append(row)
    return rows


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def collect(directories: Sequence[Path]) -> tuple[list[Run], list[str]]:
    """Every run under the directories, and a note for each run left out. A run's variant is its
    values on the suite's axes other than game and seed, after the suite's name when several
    directories are compared or the suite has no such axes."""
    runs: list[Run] = []
    notes: list[str] = []
    for directory in directories:
        if not directory.is_dir():
            raise UserError(f"{directory}: no such directory; give suite directories or run directories")
        suite_file = directory / SUITE_FILE
        saved = yaml.safe_load(suite_file.read_text()) if suite_file.is_file() else {}
        name = saved.get("name") or directory.resolve().name
        axes = [key for key in saved.get("grid", {}) if key not in (GAME_AXIS, SEED_AXIS)]
        found = 0
        # A run directory, a suite's cells, a cloud suite's fetched cells (<cell>/run/)
        candidates = [
            *directory.glob("config.yaml"),
            *directory.glob("*/config.yaml"),
            *directory.glob("*/*/config.yaml"),
        ]
        for config_path in sorted(candidates):
            path = config_path.parent
            if NOT_RUNS & set(config_path.relative_to(directory).parts[:-1]):
                continue
            rows = read_metrics(path / METRICS_FILE) if (path / METRICS_FILE).is_file() else []
            if not rows:
                notes.append(
                    f"{path}: no iterations in {METRICS_FILE} (not started yet, or trained before runs wrote it)"
                )
                continue
            config = yaml.safe_load(config_path.read_text())
            labels = [name] if len(directories) > 1 or not axes else []
            labels += [f"{key}={lookup(config, key)}" for key in axes]
            env = config["env_config"]
            game, mode, levels = env["env_name"], env["distribution_mode"], env["num_levels"]
            runs.append(Run(path, game, mode, levels, config["seed"], ", ".join(labels), rows))
            found += 1
        if not found:
            raise UserError(
                f"{directory}: no runs (no config.yaml with iterations in {METRICS_FILE} under it); give a suite "
                "directory of `procgen-rl benchmark` or run directories"
            )
    return runs, notes


# --- the paper's curves -----------------------------------------------------------------------


@functools.cache
def reference() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(game, split) -> (env steps, returns: one row per seed) of openai/train-procgen's logs."""
    text = (resources.files("procgen_rl") / "reference" / REFERENCE_FILE).read_text()
    points: dict[tuple[str, str], dict[int, dict[int, float]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        by_run = points.setdefault((row["game"], row["split"]), {})
        by_run.setdefault(int(row["run"]), {})[int(row["timesteps"])] = float(row["episode_reward_mean"])
    curves = {}
    for key, by_run in points.items():
        steps = np.array(sorted(next(iter(by_run.values()))), dtype=float)
        curves[key] = steps, np.array([[by_run[run][int(s)] for s in steps] for run in sorted(by_run)])
    return curves


def reference_at(game: str, split: str, step: float) -> np.ndarray | None:
    """The paper's returns of each seed at `step` (interpolated), None outside its logs."""
    steps, returns = reference()[(game, split)]
    if not steps[0] <= step <= steps[-1]:
        return None
    return np.array([np.interp(step, steps, run) for run in returns])


def paper_scores(returns: np.ndarray, game: str) -> np.ndarray:
    return np.array([normalized_score(float(value), game, REFERENCE_SETTING[0]) for value in returns])


def matches_reference(runs: Sequence[Run]) -> bool:
    return all((run.mode, run.num_levels) == REFERENCE_SETTING for run in runs)


# --- statistics -------------------------------------------------------------------------------


def t_half_width(values: np.ndarray) -> np.ndarray:
    """Half the 95% t-interval of the mean over the first axis (seeds); NaN with one seed."""
    from scipy import stats

    count = len(values)
    if count < 2:
        return np.full(values.shape[1:], math.nan)
    return stats.t.ppf((1 + CONFIDENCE) / 2, count - 1) * values.std(axis=0, ddof=1) / math.sqrt(count)


def mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...] | None:
    """Steps, mean, low, high over seeds, on the steps any seed logged up to the shortest run's end."""
    curves = [curve for curve in curves if len(curve[0])]
    if not curves:
        return None
    end = min(steps[-1] for steps, _ in curves)
    grid = np.unique(np.concatenate([steps[steps <= end] for steps, _ in curves]))
    values = np.stack([np.interp(grid, steps, returns) for steps, returns in curves])
    mean, half = values.mean(axis=0), t_half_width(values)
    return grid, mean, mean - half, mean + half


def per_game_means(samples: Sequence[np.ndarray], axis: int) -> np.ndarray:
    return np.stack([sample.mean(axis=axis) for sample in samples], axis=-1)


def aggregate_mean(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over games of each game's mean score."""
    return per_game_means(samples, axis).mean(axis=-1)


def aggregate_median(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Median over games of each game's mean score."""
    return np.median(per_game_means(samples, axis), axis=-1)


def aggregate_iqm(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean of all runs of all games: the mean of the middle 50%."""
    from scipy import stats

    return stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)


AGGREGATES: dict[str, Callable[..., np.ndarray]] = {
    "mean": aggregate_mean,
    "median": aggregate_median,
    "IQM": aggregate_iqm,
}


def probability_of_improvement(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X > Y) for a run of X and a run of Y on the same game (ties count half), averaged over
    games; `samples` are X's games, then Y's in the same order."""
    half = len(samples) // 2
    per_game = []
    for x, y in zip(samples[:half], samples[half:], strict=True):
        x, y = np.moveaxis(x, axis, -1)[..., :, None], np.moveaxis(y, axis, -1)[..., None, :]
        per_game.append((x > y).mean(axis=(-2, -1)) + 0.5 * (x == y).mean(axis=(-2, -1)))
    return np.mean(per_game, axis=0)


def estimate(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray]) -> list[float | None]:
    """[point, low, high]: the 95% interval from a stratified bootstrap, which resamples each
    game's runs on their own (Agarwal et al. 2021); no interval from one run per game."""
    from scipy import stats

    point = float(statistic(*samples))
    if min(len(sample) for sample in samples) < 2:
        return [point, None, None]
    result = stats.bootstrap(
        samples,
        statistic,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(0),
    )
    return [point, float(result.confidence_interval.low), float(result.confidence_interval.high)]


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """The runs of one game and one variant: its seeds."""

    game: str
    variant: str
    runs: list[Run]

    def scores(self, split: str) -> list[float]:
        """The final normalized score of each seed that logged a return for the split (a short
        run may have finished no episode)."""
        scores = [run.score(run.final(split)) for run in self.runs]
        return [score for score in scores if score is not None]

    def summary(self) -> dict[str, Any]:
        steps = float(np.mean([run.steps for run in self.runs]))
        row: dict[str, Any] = {
            "game": self.game,
            "variant": self.variant,
            "seeds": [run.seed for run in self.runs],
            "env_steps": steps,
            "runs": [str(run.path) for run in self.runs],
        }
        for split in SPLITS:
            returns = [value for value in (run.final(split) for run in self.runs) if value is not None]
            scores = self.scores(split)
            row[split] = (
                {"return": float(np.mean(returns)), "score": float(np.mean(scores)), "scores": scores}
                if scores
                else None
            )
        gaps = [
            train - test
            for train, test in ((run.score(run.final("train")), run.score(run.final("test"))) for run in self.runs)
            if train is not None and test is not None
        ]
        row["gap"] = float(np.mean(gaps)) if gaps else None
        if matches_reference(self.runs):
            paper = {split: reference_at(self.game, split, steps) for split in SPLITS}
            row["paper"] = {
                split: None if returns is None else float(np.mean(paper_scores(returns, self.game)))
                for split, returns in paper.items()
            }
        else:
            row["paper"] = None
        return row


def groups_of(runs: Sequence[Run]) -> list[Group]:
    key = operator.attrgetter("game", "variant")
    return [
        Group(game, variant, sorted(members, key=operator.attrgetter("seed")))
        for (game, variant), members in itertools.groupby(sorted(runs, key=key), key=key)
    ]


def score_matrix(groups: Sequence[Group], split: str) -> dict[str, np.ndarray]:
    """Final scores by game, for the games with any, as many seeds for every game (the fewest
    any of them has): the stratified bootstrap resamples equal strata."""
    by_game = {group.game: group.scores(split) for group in groups if group.scores(split)}
    seeds = min((len(scores) for scores in by_game.values()), default=0)
    return {game: np.array(scores[:seeds]) for game, scores in sorted(by_game.items())}


def reference_matrix(groups: Sequence[Group], split: str) -> dict[str, np.ndarray]:
    """The paper's score of each of its seeds, for each game at the step count the report's runs
    reached; empty unless every game's runs match its setting and reach its first point."""
    samples = {}
    for game in sorted({group.game for group in groups}):
        runs = [run for group in groups if group.game == game for run in group.runs]
        returns = reference_at(game, split, float(np.mean([run.steps for run in runs])))
        if returns is None or not matches_reference(runs):
            return {}
        samples[game] = paper_scores(returns, game)
    return samples


def build(runs: Sequence[Run]) -> dict[str, Any]:
    """Every number of the report, as scores.json holds them."""
    groups = groups_of(runs)
    variants = sorted({group.variant for group in groups})
    games = sorted({group.game for group in groups})
    aggregates: dict[str, dict[str, Any]] = {}
    matrices: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for variant in [*variants, REFERENCE]:
        for split in SPLITS:
            mine = [group for group in groups if group.variant == variant]
            samples = reference_matrix(groups, split) if variant == REFERENCE else score_matrix(mine, split)
            if not samples:
                continue
            matrices[(variant, split)] = samples
            aggregates.setdefault(variant, {})[split] = {
                "games": list(samples),
                "runs_per_game": len(next(iter(samples.values()))),
                **{name: estimate(list(samples.values()), statistic) for name, statistic in AGGREGATES.items()},
            }
    improvements = []
    for x, y in itertools.combinations(variants, 2):
        for split in SPLITS:
            xs, ys = matrices.get((x, split), {}), matrices.get((y, split), {})
            shared = sorted(set(xs) & set(ys))
            if not shared:
                continue
            seeds = min(len(xs[shared[0]]), len(ys[shared[0]]))  # as many runs of X as of Y on every game
            pairs = [xs[game][:seeds] for game in shared] + [ys[game][:seeds] for game in shared]
            improvements.append(
                {
                    "x": x,
                    "y": y,
                    "split": split,
                    "games": shared,
                    "probability": estimate(pairs, probability_of_improvement),
                }
            )
    return {
        "runs": len(runs),
        "games": games,
        "variants": variants,
        "sources": {split: sorted({str(run.source(split)) for run in runs if run.source(split)}) for split in SPLITS},
        "confidence": CONFIDENCE,
        "bootstrap_resamples": RESAMPLES,
        "per_game": [group.summary() for group in groups],
        "aggregates": aggregates,
        "probability_of_improvement": improvements,
    }


# --- output -----------------------------------------------------------------------------------


def figure(game: str, groups: Sequence[Group], out: Path) -> Path:
    """curves-<game>.png: a panel per split with returns, each variant's mean over seeds with its
    95% interval, and the paper's PPO (its 3 seeds) up to the runs' last step where it applies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for group in groups for run in group.runs]
    end = max(run.steps for run in runs)
    panels: dict[str, list[tuple[str, tuple[np.ndarray, ...], str]]] = {}
    for split in SPLITS:
        candidates = [
            (f"{g.variant} ({len(g.runs)} seeds)", mean_curve([r.curve(split) for r in g.runs]), "") for g in groups
        ]
        if matches_reference(runs):
            steps, returns = reference()[(game, split)]
            shown = steps <= end
            mean, half = returns.mean(axis=0), t_half_width(returns)
            paper = (steps[shown], mean[shown], (mean - half)[shown], (mean + half)[shown])
            candidates.append((f"{REFERENCE} (3 seeds)", paper if shown.any() else None, "k"))
        lines = [(label, curve, color) for label, curve, color in candidates if curve is not None]
        if lines:
            panels[split] = lines
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.8), squeeze=False)
    for ax, (split, lines) in zip(axes[0], panels.items(), strict=True):
        for label, (steps, mean, low, high), color in lines:
            style = {"color": color, "linestyle": "--"} if color else {}
            ax.plot(steps, mean, label=label, marker="o" if len(steps) <= FEW_POINTS else None, **style)
            ax.fill_between(steps, low, high, alpha=0.12 if color else 0.25, **({"color": color} if color else {}))
        sources = sorted({str(run.source(split)) for run in runs if run.source(split)})
        ax.set_title(f"{game}: {split} ({', '.join(sources) or 'not logged by these runs'})", fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel("mean episode return")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"curves-{game}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def interval(values: list[float | None]) -> str:
    point, low, high = values
    return number(point) if low is None else f"{number(point)} [{number(low)}, {number(high)}]"


def sources_text(scores: dict[str, Any]) -> list[str]:
    train, test = scores["sources"]["train"], scores["sources"]["test"]
    lines = []
    if train == ["episode_reward_mean"]:
        lines.append(
            "Train returns are the training episodes' (`episode_reward_mean`, the mean of the last 100): "
            "these runs logged no evaluation on their training levels."
        )
    else:
        mixed = "; runs without it: the training episodes' (`episode_reward_mean`)" if len(train) > 1 else ""
        lines.append(f"Train returns: the evaluation on the training levels (`{TRAIN_SOURCES[0]}`){mixed}.")
    if not test:
        lines.append(
            "Test returns: none. These runs logged no evaluation on unseen levels (no `eval_test_reward_mean` "
            "in metrics.jsonl), so there is no test score and no generalization gap."
        )
    else:
        lines.append(f"Test returns: `{TEST_SOURCE}` (evaluation on unseen levels), where logged.")
    return lines


def markdown(scores: dict[str, Any], directories: Sequence[Path], notes: Sequence[str], figures: Sequence[Path]) -> str:
    per_game = scores["per_game"]
    paper = any(row["paper"] for row in per_game)
    lines = [
        f"# Benchmark report: {', '.join(d.resolve().name for d in directories)}",
        "",
        f"{scores['runs']} runs of {len(scores['games'])} games ({', '.join(scores['games'])}); "
        f"variants: {', '.join(scores['variants'])}. Written by `procgen-rl report "
        f"{' '.join(str(d) for d in directories)}` from each run's config.yaml and {METRICS_FILE}.",
        "",
        *sources_text(scores),
        "Scores are normalized with the paper's constants: (R - R_min) / (R_max - R_min) "
        "(procgen_rl.procgen.NORMALIZATION); the gap is train score - test score.",
        "The paper's PPO: openai/train-procgen's published logs (easy, 200 training levels, 3 "
        "seeds; src/procgen_rl/reference/README.md), interpolated at the same env step count; n/a before its "
        "first logged point (131,072 steps)."
        if paper
        else "The paper's PPO is not shown: its curves are easy with 200 training levels, and these runs are not.",
        "",
        "## Final scores per game",
        "",
        "| game | variant | seeds | env steps | train return | train score | test return | test score | gap | "
        "paper train score | paper test score |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in per_game:
        train, test, ref = row["train"] or {}, row["test"] or {}, row["paper"] or {}
        lines.append(
            f"| {row['game']} | {row['variant']} | {len(row['seeds'])} | {row['env_steps']:,.0f} | "
            f"{number(train.get('return'))} | {number(train.get('score'))} | {number(test.get('return'))} | "
            f"{number(test.get('score'))} | {number(row['gap'])} | {number(ref.get('train'))} | "
            f"{number(ref.get('test'))} |"
        )
    lines += [
        "",
        "## Over games",
        "",
        f"Final normalized scores, with {CONFIDENCE:.0%} intervals from a stratified bootstrap (each game's runs "
        f"resampled on their own, {RESAMPLES:,} resamples, percentile method; Agarwal et al. 2021). IQM: the mean "
        "of the middle 50% of all runs. No interval from one run per game.",
        "",
        "| variant | split | games x runs | mean | median | IQM |",
        "|---|---|---|---|---|---|",
    ]
    for variant, splits in scores["aggregates"].items():
        for split, row in splits.items():
            lines.append(
                f"| {variant} | {split} | {len(row['games'])} x {row['runs_per_game']} | {interval(row['mean'])} | "
                f"{interval(row['median'])} | {interval(row['IQM'])} |"
            )
    if scores["probability_of_improvement"]:
        lines += [
            "",
            "## Probability of improvement",
            "",
            "P(X > Y): the chance that a run of X scores higher than a run of Y on the same game (ties count "
            "half), averaged over the games both have, with its stratified-bootstrap interval.",
            "",
            "| X | Y | split | games | P(X > Y) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {row['x']} | {row['y']} | {row['split']} | {len(row['games'])} | {interval(row['probability'])} |"
            for row in scores["probability_of_improvement"]
        ]
    lines += ["", "## Curves", "", "Mean over seeds, with the 95% t-interval shaded.", ""]
    lines += [f"![{path.stem}]({path.name})" for path in figures]
    if notes:
        lines += ["", "## Left out", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def write(
    directories: Sequence[Path], out: Path | None = None, notes: Sequence[str] = ()
) -> tuple[Path, dict[str, Any], list[str]]:
    """Write report.md, scores.json and a PNG per game into `out` (default: the first directory);
    `notes`: what was left out before (cells a cloud suite has nothing for yet)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("the report draws its curves with matplotlib: pip install 'procgen-rl[bench]'") from None
    runs, left_out = collect(directories)
    notes = [*notes, *left_out]
    out = out or directories[0]
    out.mkdir(parents=True, exist_ok=True)
    scores = build(runs)
    groups = groups_of(runs)
    figures = [figure(game, [g for g in groups if g.game == game], out) for game in scores["games"]]
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    path = out / "report.md"
    path.write_text(markdown(scores, directories, notes, figures))
    return path, scores, notes
