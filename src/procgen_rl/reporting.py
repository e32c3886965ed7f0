"""What a run reports each iteration: one `name=value` line, TensorBoard scalars, a progress bar.

The metric line is the machine interface (SageMaker metric definitions parse it, see
METRIC_LINE_REGEX); its names and meanings are fixed:

    iteration            training iterations done, across resumes
    timesteps_total      env steps sampled, across resumes
    episodes_total       episodes finished, across resumes
    episode_reward_mean  mean raw game return of the last 100 finished episodes
    episode_reward_min   its minimum; episode_reward_max its maximum
    episode_len_mean     mean length of those episodes
    normalized_score     (episode_reward_mean - R_min) / (R_max - R_min), paper constants
    steps_per_s          env steps of this iteration / its wall time (sampling + learning)
    time_total_s         training wall time, across resumes
    policy_loss, vf_loss, entropy   learner values of this iteration
    aux_value_loss, aux_kl, aux_vf_loss   PPG, on the iterations that end a phase: the auxiliary
                         phase's last minibatch (procgen_rl.ppg); absent on other iterations
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from pathlib import Path
from typing import Any, TextIO

STEPS_BY_HOST = "steps_by_host"  # env runner metric: env steps sampled, per host name
AUXILIARY_LOSSES = ("aux_value_loss", "aux_kl", "aux_vf_loss")  # PPG's learner logs them
METRIC_PREFIX = "[metrics]"
METRIC_KEYS = (
    "iteration",
    "timesteps_total",
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
    *AUXILIARY_LOSSES,
)
# Group 1 is the value: `METRIC_LINE_REGEX.format(name="normalized_score")`.
METRIC_LINE_REGEX = r"\[metrics\].* {name}=([-+0-9.eE]+|nan)"
# TensorBoard groups, CleanRL-style.
TENSORBOARD_GROUP = {"policy_loss": "losses", "vf_loss": "losses", "entropy": "losses"} | dict.fromkeys(
    AUXILIARY_LOSSES, "losses"
)


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


def progress_line(metrics: dict[str, float], total_steps: int, eta_s: float, width: int = 24) -> str:
    """`[#####-----]  40% 3.2M/8M steps | reward 6.10 | 118 steps/s | ETA 10h02m`."""
    done = metrics["timesteps_total"]
    fraction = min(1.0, done / total_steps) if total_steps else 0.0
    bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
    total = f"/{total_steps:,}" if total_steps else ""
    return (
        f"[{bar}] {fraction:4.0%} {int(done):,}{total} steps | reward {metrics['episode_reward_mean']:.2f}"
        f" | {metrics['steps_per_s']:.0f} steps/s | ETA {format_duration(eta_s)}"
    )


class Reporter:
    """Prints the metric line (stdout) and, on a terminal, a redrawn progress bar (stderr)."""

    def __init__(self, tensorboard_dir: str, stream: TextIO = sys.stdout) -> None:
        from torch.utils.tensorboard import SummaryWriter  # starts no server, writes event files

        self.writer = SummaryWriter(tensorboard_dir)
        self.stream = stream
        self.tty = sys.stderr.isatty()

    def report(self, metrics: dict[str, float], total_steps: int, eta_s: float) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
        print(metric_line(metrics), file=self.stream, flush=True)
        if self.tty:
            sys.stderr.write(progress_line(metrics, total_steps, eta_s))
            sys.stderr.flush()
        step = int(metrics["timesteps_total"])
        for key in METRIC_KEYS:
            value = metrics.get(key)
            if value is not None and key not in ("iteration", "timesteps_total") and not math.isnan(value):
                self.writer.add_scalar(f"{TENSORBOARD_GROUP.get(key, 'charts')}/{key}", value, step)
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


def first_number(*candidates: Any) -> float:
    """The first candidate that is a real number, else NaN (RLlib omits keys it has no data for).
    numpy scalars count: results gathered from remote env runners carry numpy.int64 counts."""
    for value in candidates:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    return math.nan
