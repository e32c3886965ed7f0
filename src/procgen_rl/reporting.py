"""What a run reports each iteration: one `name=value` line, TensorBoard scalars, metrics.jsonl
and a progress bar.

The metric line is the machine interface (SageMaker metric definitions parse it, see
METRIC_LINE_REGEX); its names and meanings are fixed:

    iteration            training iterations done, across resumes
    timesteps_total      env steps sampled (fragments the env runners returned), across resumes
    timesteps_trained    env steps the learner trained on, each counted once however many epochs
                         pass over it, across resumes; stop.timesteps_total limits this count.
                         A PPO iteration trains on exactly what it sampled, so the two are equal.
                         Learners that do not count them (APPO's, IMPALA's, custom ones) count
                         their steps sampled here: they train asynchronously on what reaches them
    episodes_total       episodes finished, across resumes
    episode_reward_mean  mean raw game return of the last 100 finished episodes
    episode_reward_min   its minimum; episode_reward_max its maximum
    episode_len_mean     mean length of those episodes
    normalized_score     (episode_reward_mean - R_min) / (R_max - R_min), paper constants
    steps_per_s          env steps sampled in this iteration / its wall time (sampling + learning)
    time_total_s         training wall time, across resumes
    policy_loss, vf_loss, entropy   learner values of this iteration
    aux_value_loss, aux_kl, aux_vf_loss   PPG, on the iterations that end a phase: the auxiliary
                         phase's last minibatch (procgen_rl.ppg); absent on other iterations

and, on the iterations that evaluate (every evaluation.interval; absent from the others):

    eval_train_reward_mean       mean raw return of evaluation.episodes episodes on the training levels
    eval_test_reward_mean        the same on unseen levels (num_levels 0, past the training levels)
    eval_train_normalized_score  eval_train_reward_mean normalized as normalized_score
    eval_test_normalized_score   eval_test_reward_mean normalized
    eval_generalization_gap      eval_train_normalized_score - eval_test_normalized_score

An evaluation at iteration N plays the policy as iteration N began (procgen_rl.evaluation).
TensorBoard shows them against timesteps_total as charts/<name>, losses/<name> and
eval/<name without eval_>; metrics.jsonl holds one JSON object per iteration with every value
of the line except NaNs.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from pathlib import Path
from typing import Any, TextIO

STEPS_BY_HOST = "steps_by_host"  # env runner metric: env steps sampled, per host name
STEPS_TRAINED = "env_steps_trained"  # learner metric (procgen_rl.learner): env steps updated on, once each
METRICS_FILE = "metrics.jsonl"  # in the run directory: one JSON object per iteration
AUXILIARY_LOSSES = ("aux_value_loss", "aux_kl", "aux_vf_loss")  # PPG's learner logs them
METRIC_PREFIX = "[metrics]"
METRIC_KEYS = (
    "iteration",
    "timesteps_total",
    "timesteps_trained",
    "episodes_total",
    "episode_reward_mean",
    "episode_reward_min",
    "episode_reward_max",
    "episode_len_mean",
    "normalized_score",
    "steps_per_s",
    "time_total_s",
    "policy_loss",
    "vf_loss",
    "entropy",
    "eval_train_reward_mean",
    "eval_test_reward_mean",
    "eval_train_normalized_score",
    "eval_test_normalized_score",
    "eval_generalization_gap",
    *AUXILIARY_LOSSES,
)
# Group 1 is the value: `METRIC_LINE_REGEX.format(name="normalized_score")`.
METRIC_LINE_REGEX = r"\[metrics\].* {name}=([-+0-9.eE]+|nan)"
# TensorBoard groups, CleanRL-style.
TENSORBOARD_GROUP = {"policy_loss": "losses", "vf_loss": "losses", "entropy": "losses"} | dict.fromkeys(
    AUXILIARY_LOSSES, "losses"
)
EVAL_PREFIX = "eval_"


def tensorboard_tag(key: str) -> str:
    """`eval/train_reward_mean` for `eval_train_reward_mean`, else `charts/<key>` or `losses/<key>`."""
    if key.startswith(EVAL_PREFIX):
        return f"eval/{key.removeprefix(EVAL_PREFIX)}"
    return f"{TENSORBOARD_GROUP.get(key, 'charts')}/{key}"


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.6g}"


def metric_line(metrics: dict[str, float]) -> str:
    """`[metrics] iteration=3 timesteps_total=49152 ...`, keys always in METRIC_KEYS order."""
    return " ".join([METRIC_PREFIX] + [f"{k}={format_value(metrics[k])}" for k in METRIC_KEYS if k in metrics])


def parse_metric_line(line: str) -> dict[str, float]:
    """Inverse of `metric_line`, for tests and log readers."""
    fields = line.removeprefix(METRIC_PREFIX).split()
    return {k: float(v) for k, v in (f.split("=", 1) for f in fields)}


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_line(
    metrics: dict[str, float],
    total_steps: int,
    eta_s: float,
    evaluation: dict[str, float] | None = None,
    width: int = 24,
) -> str:
    """`[#####-----]  40% 3.2M/8M steps | reward 6.10 | eval 7.20/5.90 | 118 steps/s | ETA 10h02m`:
    steps trained against the budget; `evaluation`, the latest eval_* metrics, adds their train/test
    mean returns."""
    done = metrics["timesteps_trained"]
    fraction = min(1.0, done / total_steps) if total_steps else 0.0
    bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
    total = f"/{total_steps:,}" if total_steps else ""
    evaluated = (
        f" | eval {evaluation['eval_train_reward_mean']:.2f}/{evaluation['eval_test_reward_mean']:.2f}"
        if evaluation
        else ""
    )
    return (
        f"[{bar}] {fraction:4.0%} {int(done):,}{total} steps | reward {metrics['episode_reward_mean']:.2f}{evaluated}"
        f" | {metrics['steps_per_s']:.0f} steps/s | ETA {format_duration(eta_s)}"
    )


class Reporter:
    """Prints the metric line (stdout) and, on a terminal, a redrawn progress bar (stderr); writes
    TensorBoard scalars and appends to metrics.jsonl, both in `run_path`."""

    def __init__(self, run_path: str | Path, stream: TextIO = sys.stdout) -> None:
        from torch.utils.tensorboard import SummaryWriter  # starts no server, writes event files

        self.writer = SummaryWriter(str(run_path))
        self.jsonl = open(Path(run_path, METRICS_FILE), "a", encoding="utf-8")
        self.stream = stream
        self.tty = sys.stderr.isatty()
        self.evaluation: dict[str, float] = {}  # the latest eval_* metrics, for the progress bar

    def report(self, metrics: dict[str, float], total_steps: int, eta_s: float) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
        print(metric_line(metrics), file=self.stream, flush=True)
        self.evaluation = {k: v for k, v in metrics.items() if k.startswith(EVAL_PREFIX)} or self.evaluation
        if self.tty:
            sys.stderr.write(progress_line(metrics, total_steps, eta_s, self.evaluation))
            sys.stderr.flush()
        values = {key: metrics[key] for key in METRIC_KEYS if key in metrics and not math.isnan(metrics[key])}
        self.jsonl.write(json.dumps(values) + "\n")
        self.jsonl.flush()
        step = int(metrics["timesteps_total"])
        for key, value in values.items():
            if key not in ("iteration", "timesteps_total"):
                self.writer.add_scalar(tensorboard_tag(key), value, step)
        self.writer.flush()

    def report_hosts(self, steps_by_host: dict[str, float], path: Path, step: int) -> None:
        """Env steps sampled per host: `hosts/<name>` scalars and a JSON file beside them."""
        counts = {host: int(steps) for host, steps in sorted(steps_by_host.items())}
        path.write_text(json.dumps(counts, indent=2))
        for host, steps in counts.items():
            self.writer.add_scalar(f"hosts/{host}", steps, step)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
        self.writer.close()
        self.jsonl.close()


def first_number(*candidates: Any) -> float:
    """The first candidate that is a real number, else NaN (RLlib omits keys it has no data for).
    numpy scalars count: results gathered from remote env runners carry numpy.int64 counts."""
    for value in candidates:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    return math.nan
