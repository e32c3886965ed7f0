"""The experiment: one typed config, filled the same way from YAML, `--set` and hyperparameters.

Each field is declared with `setting(default, doc, allowed)`, so its doc and its allowed values sit
next to it: `validate` checks every value against them, and docs/configuration.md is generated from
them (`python -m procgen_rl.config_reference`). Every value passes through `coerce`, so "8e6",
8000000 and 8e6 all become the int 8000000, and every error names where the value came from (file,
`--set` or hyperparameter), the key, the value and what is allowed.
Nothing here imports Ray, torch or envpool.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from procgen_rl.errors import ConfigError
from procgen_rl.procgen import DISTRIBUTION_MODES, FRAME_SHAPE, GAMES, MODE_GAMES, NUM_ACTIONS

INT32_MAX = 2**31 - 1  # Procgen and envpool take level seeds and env seeds as C++ ints
# Far above any one learner's batch: the bound only catches typos; `check_memory` sizes real runs.
MAX_ENVS = 2**16
MAX_STEPS = 2**16
MAX_ACTORS = 1024  # env runners or learners: more than any cluster this harness launches
MAX_EXPERIMENT_BYTES = 2**20  # an experiment is a page of YAML; a bigger file is not one
LEARNER_DEVICES = ("auto", "cpu", "cuda")
LAYOUTS = ("auto", "manual")
# The Ray custom resource a launcher gives each host (N units = N env runners there), so that
# with `spread_env_runners` sampling spreads over all hosts instead of packing onto the first.
ENV_RUNNER_SLOT = "env_runner_slot"


class Allowed(Protocol):
    """The values a setting accepts: `str()` describes them for the docs, `problem` checks one."""

    def problem(self, value: Any) -> str | None:
        """Why `value` is refused, or None when it is allowed."""


@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (None: no upper bound); `low_open` excludes `low` itself."""

    low: float
    high: float | None = None
    low_open: bool = False

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"{'(' if self.low_open else '['}{self.low}, {self.high}]"

    def problem(self, value: float) -> str | None:
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or (self.high is not None and value > self.high):
            return f"must be {'in ' if self.high is not None else ''}{self}, got {value}"
        return None


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of names; `noun` says what they are in errors ("unknown game 'pong'")."""

    choices: tuple[str, ...]
    noun: str

    def __str__(self) -> str:
        return ", ".join(self.choices)

    def problem(self, value: str) -> str | None:
        return None if value in self.choices else f"unknown {self.noun} {value!r}; allowed: {self}"


class RunName:
    """A name that is safe as one directory name, since a run's directory is named after it."""

    pattern = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")

    def __str__(self) -> str:
        return "1-100 letters, digits, '.', '_' or '-', not starting with '.'"

    def problem(self, value: str) -> str | None:
        return None if self.pattern.fullmatch(value) else f"{value!r} is not a safe run name; allowed: {self}"


def setting(default: Any, doc: str, allowed: Allowed | None = None) -> Any:
    """A config field with its one-line doc and the values `validate` allows (None: any value of
    its type); docs/configuration.md is generated from these."""
    metadata = {"doc": doc, "allowed": allowed}
    if isinstance(default, (dict, list)):
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class EnvConfig:
    """Procgen options, named as in procgen's README, plus an optional frame stack."""

    env_name: str = setting("coinrun", "the Procgen game", OneOf(GAMES, "game"))
    num_levels: int = setting(200, "unique training levels; 0 = unlimited", Range(0, INT32_MAX))
    start_level: int = setting(
        0, f"seed of the first level; start_level + num_levels must be at most {INT32_MAX}", Range(0, INT32_MAX)
    )
    distribution_mode: str = setting(
        "easy",
        "level variant; "
        + "; ".join(f"{mode} only in {', '.join(sorted(games))}" for mode, games in MODE_GAMES.items()),
        OneOf(tuple(DISTRIBUTION_MODES), "distribution mode"),
    )
    use_sequential_levels: bool = setting(
        False, "completing a level does not end the episode: the next level's seed follows from this one's"
    )
    center_agent: bool = setting(True, "center the view on the agent; false shows the whole level")
    use_backgrounds: bool = setting(True, "draw the designed backgrounds; false draws plain black")
    restrict_themes: bool = setting(False, "games with several asset themes use only one")
    use_monochrome_assets: bool = setting(False, "monochrome rectangles instead of the designed assets")
    paint_vel_info: bool = setting(False, "paint the player's velocity in the top-left corner (some games)")
    use_generated_assets: bool = setting(False, "randomly generated assets instead of the designed ones")
    frame_stack: int = setting(1, "frames stacked along the channels; 1 = none", Range(1, 16))


@dataclass
class ModelConfig:
    """Which RLModule to build, and its options."""

    custom_model: str = setting(
        "impala_cnn",
        "a model in procgen_rl/models/ (impala_cnn; ppg_impala_cnn for PPG) or package.module:Class, an RLlib "
        "TorchRLModule; checked when the algorithm is built, before Ray starts",
    )
    custom_model_config: dict = setting(
        {},
        "passed to the model as-is; impala_cnn and ppg_impala_cnn take depths ([16, 32, 32]), hidden (256), "
        "precision (fp32 or bf16) and augment ({crop: N}: the learner's frames shifted by up to N pixels, "
        "DrAC's random crop; N = 12 there; off by default)",
    )


@dataclass
class PhasicConfig:
    """Phasic Policy Gradient (Cobbe et al. 2021), used when algorithm.name is PPG: phases of
    n_iteration policy iterations (PPO on the policy network, the value network on its own
    loss), each followed by an auxiliary phase over all the frames the phase sampled. Names and
    defaults are the paper's for Procgen; see docs/ppg.md."""

    n_iteration: int = setting(
        32, "N_pi: policy iterations per phase, each num_envs x num_steps steps; their frames are kept", Range(1)
    )
    e_policy: int = setting(1, "E_pi: epochs of the clipped surrogate over each iteration's batch", Range(1, 100))
    e_value: int = setting(1, "E_V: epochs of the value loss over each iteration's batch", Range(1, 100))
    e_aux: int = setting(
        6, "E_aux: epochs over the phase's frames in its auxiliary phase; 0 = no auxiliary phase", Range(0, 100)
    )
    beta_clone: float = setting(
        1.0, "weight of the KL to the policy as it was before the auxiliary phase, in its loss", Range(0)
    )
    num_aux_rollouts: int = setting(
        4,
        "auxiliary minibatches of num_aux_rollouts x num_steps frames (CleanRL's); at most n_iteration x num_envs",
        Range(1),
    )


@dataclass
class AlgorithmConfig:
    """Hyperparameters, named as in the Procgen paper and CleanRL; defaults are the paper's PPO."""

    name: str = setting(
        "PPO",
        "PPO, APPO, IMPALA, PPG or package.module:ConfigClass, an RLlib AlgorithmConfig; checked when the "
        "algorithm is built, before Ray starts",
    )
    learning_rate: float = setting(5e-4, "Adam step size", Range(0, 1, low_open=True))
    gamma: float = setting(0.999, "discount factor", Range(0, 1, low_open=True))
    gae_lambda: float = setting(0.95, "GAE lambda", Range(0, 1))
    clip_coef: float = setting(
        0.2, "PPO/APPO surrogate clip range; PPO clips the value change by it too", Range(0, 1, low_open=True)
    )
    ent_coef: float = setting(0.01, "weight of the entropy bonus in the loss", Range(0))
    vf_coef: float = setting(0.5, "weight of the value loss (0.5 x squared error) in the loss", Range(0))
    max_grad_norm: float = setting(0.5, "gradients are clipped to this global norm", Range(0, low_open=True))
    update_epochs: int = setting(3, "passes over each batch (PPG: ppg.e_policy and ppg.e_value)", Range(1, 100))
    num_minibatches: int = setting(8, "minibatches per epoch; must divide num_envs x num_steps", Range(1))
    num_envs: int = setting(64, "environments in total, split evenly over the env runners", Range(1, MAX_ENVS))
    num_steps: int = setting(
        256, "steps per environment per rollout; a batch is num_envs x num_steps", Range(1, MAX_STEPS)
    )
    normalize_reward: bool = setting(
        True, "divide rewards by a running std of discounted returns (baselines' VecNormalize)"
    )
    rllib: dict = setting(
        {}, "extra AlgorithmConfig calls, {section: {argument: value}}, applied after everything else"
    )
    ppg: PhasicConfig = field(default_factory=PhasicConfig)

    @property
    def train_batch_size(self) -> int:
        """Env steps per training iteration: num_envs x num_steps."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Env steps per gradient step: train_batch_size / num_minibatches."""
        return self.train_batch_size // self.num_minibatches


@dataclass
class ResourcesConfig:
    """How the work is spread; launchers change these, the learning math does not change."""

    num_env_runners: int = setting(
        0,
        "remote sampling actors; must divide algorithm.num_envs; 0 samples in the driver process",
        Range(0, MAX_ACTORS),
    )
    num_cpus_per_env_runner: int = setting(
        1, "CPUs Ray reserves for each env runner, and its torch threads", Range(0, MAX_ACTORS)
    )
    num_gpus_per_env_runner: float = setting(
        0.0,
        "the share of a GPU Ray gives each env runner (fractional); its inference runs there, as a CUDA graph",
        Range(0, MAX_ACTORS),
    )
    infer_on_host_gpu: bool = setting(
        False,
        "env runners infer on a GPU of their host when one is visible, with no share from Ray, so that GPU "
        "and CPU hosts can sample together",
    )
    num_learners: int = setting(
        0, "remote learners; 0 learns in the driver process; PPG takes 0 or 1", Range(0, MAX_ACTORS)
    )
    spread_env_runners: bool = setting(
        False, f"one env runner per unit of each host's {ENV_RUNNER_SLOT!r} Ray resource (multi-host launchers set it)"
    )
    learner_device: str = setting(
        "auto", "where the learner trains; auto = a GPU when one is visible", OneOf(LEARNER_DEVICES, "device")
    )
    learner_threads: int = setting(
        0, "torch threads of the learner in the driver process; 0 = torch's default", Range(0, MAX_ACTORS)
    )
    layout: str = setting(
        "auto",
        "auto: the values of this section that the experiment does not set are chosen from each host's "
        "CPUs, GPUs and GPU memory (docs/layout.md); manual: the section as written",
        OneOf(LAYOUTS, "layout"),
    )


@dataclass
class StopConfig:
    """Training ends at whichever limit comes first; 0 disables a limit, and at least one must be set.
    Limits count across resumes."""

    timesteps_total: int = setting(
        8_000_000, "env steps trained on (the metric line's timesteps_trained); 0 = no limit", Range(0)
    )
    time_total_s: float = setting(
        0.0,
        "seconds of training; no iteration starts that would end past it (at the last one's pace); 0 = no limit",
        Range(0),
    )
    training_iteration: int = setting(0, "training iterations; 0 = no limit", Range(0))


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many stay on disk."""

    frequency: int = setting(10, "checkpoint every N iterations, and always at the end; 0 = at the end only", Range(0))
    keep: int = setting(3, "most recent checkpoints kept; 0 = all", Range(0))


@dataclass
class EvaluationConfig:
    """The policy (sampled actions) played on the training levels and on unseen levels during
    training, by evaluation env runners of its own, in parallel with the training iteration."""

    interval: int = setting(0, "evaluate every N training iterations; 0 = never", Range(0))
    episodes: int = setting(
        32, "episodes on each split (training levels, unseen levels) per evaluation", Range(1, MAX_ENVS)
    )
    num_envs: int = setting(
        32,
        "envs per split, split evenly over the evaluation env runners; each plays episodes / num_envs "
        "episodes in a row (its first ones, so short episodes are not over-counted); must divide episodes",
        Range(1, MAX_ENVS),
    )
    num_env_runners: int = setting(
        1, "evaluation env runners (Ray actors reserving no CPU); must divide num_envs", Range(1, MAX_ACTORS)
    )


@dataclass
class Experiment:
    """A whole run: what to train, how, and when to stop."""

    name: str = setting(
        "experiment", "the run's name, which names its directory; default: the experiment file's name", RunName()
    )
    seed: int = setting(
        0,
        "seeds Python, numpy, torch and the envs; each env's seed, (seed + runner index) x envs per runner + "
        f"env index, must be at most {INT32_MAX}",
        Range(0, INT32_MAX),
    )
    env_config: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    callbacks: list[str] = setting([], "extra RLlib callbacks: names in procgen_rl/callbacks/ or package.module:Class")

    @property
    def num_envs_per_env_runner(self) -> int:
        """Envs each env runner (or the driver, without runners) steps: num_envs / num_env_runners."""
        return self.algorithm.num_envs // max(1, self.resources.num_env_runners)


@dataclass(frozen=True)
class Setting:
    """One leaf field of a config section, as the reference page lists it."""

    name: str
    type: Any
    default: Any
    doc: str
    allowed: Allowed | None


def sections(cls: type = Experiment, prefix: str = "") -> Iterator[tuple[str, type]]:
    """(dotted prefix, dataclass) for the experiment and each nested section, in declaration order."""
    yield prefix, cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from sections(hints[f.name], dotted(prefix, f.name))


def settings(cls: type) -> list[Setting]:
    """The leaf fields of one section (nested sections left out), in declaration order."""
    hints, defaults = typing.get_type_hints(cls), cls()
    return [
        Setting(f.name, hints[f.name], getattr(defaults, f.name), f.metadata["doc"], f.metadata["allowed"])
        for f in dataclasses.fields(cls)
        if not dataclasses.is_dataclass(hints[f.name])
    ]


def dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert `value` to the field's type, accepting the string forms CLIs and SageMaker send."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        number = _number(value, where, "an integer")
        if not float(number).is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if annotation is float:
        return float(_number(value, where, "a number"))
    if annotation is str:
        if isinstance(value, str) and value:
            return value
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    if annotation is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if typing.get_origin(annotation) is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.startswith("[") else [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"no coercion for {annotation}")  # a programming error, not user input


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    if isinstance(value, (int, float)):
        number = value
    else:
        try:
            number = float(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where}: expected {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return number


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    where = f"{source}: {prefix or 'top level'}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix + '.' if prefix else ''}{unknown[0]}'; allowed: {', '.join(fields)}"
        )
    values = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], value, source, key)
        else:
            values[name] = coerce(value, hints[name], f"{source}: {key}")
    return cls(**values)


def _set_dotted(raw: dict, dotted_key: str, value: Any, source: str) -> None:
    """Set `a.b.c` in a nested mapping, creating levels; free-form dicts take any sub-key."""
    parts = dotted_key.split(".")
    node = raw
    cls: type | None = Experiment
    for i, part in enumerate(parts[:-1]):
        if cls is not None:
            hints = typing.get_type_hints(cls)
            if part not in hints:
                allowed = ", ".join(f.name for f in dataclasses.fields(cls))
                raise ConfigError(f"{source}: unknown key '{'.'.join(parts[: i + 1])}'; allowed: {allowed}")
            hint = hints[part]
            cls = hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None
            if cls is None and hint is not dict:
                raise ConfigError(f"{source}: '{'.'.join(parts[: i + 1])}' takes no sub-keys")
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if cls is not None:  # a typed leaf: check it here, so the error names the override
        hints = typing.get_type_hints(cls)
        if parts[-1] not in hints:
            allowed = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"{source}: unknown key '{dotted_key}'; allowed: {allowed}")
        if not dataclasses.is_dataclass(hints[parts[-1]]):
            value = coerce(value, hints[parts[-1]], source)
    node[parts[-1]] = value


def apply_overrides(raw: dict, overrides: dict[str, Any], source: str) -> dict:
    """Return `raw` with dotted-key overrides applied (values still raw; `_build` types them)."""
    merged = copy.deepcopy(raw)
    for key, value in overrides.items():
        _set_dotted(merged, key, value, f"{source} {key}")
    return merged


def parse_set_args(items: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> {"a.b": 1, "c": "x"}; values are read as YAML scalars."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. env_config.env_name=starpilot")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            overrides[key.strip()] = text
    return overrides


def load_experiment(
    path: str | Path, overrides: dict[str, Any] | None = None, override_source: str = "--set"
) -> Experiment:
    """Read an experiment YAML, apply overrides, validate; raise ConfigError naming the culprit."""
    return read_experiment(path, overrides, override_source)[0]


def read_experiment(
    path: str | Path, overrides: dict[str, Any] | None = None, override_source: str = "--set"
) -> tuple[Experiment, frozenset[str]]:
    """`load_experiment`, and the dotted keys the file or the overrides set: the values the user
    chose, which an automatic layout keeps."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: not a regular file (a directory, device or pipe); an experiment is a YAML file")
    if not path.is_file():
        known = sorted(str(p) for p in Path("experiments").glob("*.yaml"))
        hint = f"; available: {', '.join(known)}" if known else ""
        raise ConfigError(f"experiment file not found: {path}{hint}")
    if path.stat().st_size > MAX_EXPERIMENT_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes, too large for an experiment (YAML settings)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); an experiment is YAML, see experiments/") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{at}: malformed YAML: {problem}") from None
    if raw is None:
        raise ConfigError(
            f"{path}: empty (no settings, only comments or blank lines); start from a copy of "
            "an experiment in experiments/"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    overrides = overrides or {}
    origins = {key: f"{override_source} {key}" for key in overrides}
    if "name" not in raw and "name" not in overrides:
        raw["name"] = path.stem
        origins["name"] = f"{path}: name (taken from the file name; set name: in the file or {override_source} name)"
    merged = apply_overrides(raw, overrides, override_source)
    return experiment_from_dict(merged, str(path), origins), frozenset(leaf_keys(merged))


def leaf_keys(raw: dict, cls: type = Experiment, prefix: str = "") -> Iterator[str]:
    """The dotted keys of the settings a raw experiment mapping names (a section's mapping
    counts for each key in it; a free-form mapping such as algorithm.rllib counts as one)."""
    hints = typing.get_type_hints(cls)
    for name, value in raw.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            yield from leaf_keys(value, hint, dotted(prefix, name))
        else:
            yield dotted(prefix, name)


def experiment_from_dict(raw: dict, source: str, origins: dict[str, str] | None = None) -> Experiment:
    """Build and validate; `origins` maps overridden keys to where they came from, for errors."""
    experiment = _build(Experiment, raw, source, "")
    validate(experiment, source, origins or {})
    return experiment


def validate(experiment: Experiment, source: str, origins: dict[str, str]) -> None:
    """Check every value against its setting's allowed values, then the rules that join several
    settings; all before anything starts."""
    env, algo, res = experiment.env_config, experiment.algorithm, experiment.resources

    def fail(key: str, message: str) -> None:
        where = origins.get(key) or next((f"{o}: {key}" for k, o in origins.items() if key.startswith(f"{k}.")), None)
        raise ConfigError(f"{where}: {message}" if where else f"{source}: {key}: {message}")

    for prefix, cls in sections():
        section = functools.reduce(getattr, prefix.split(".") if prefix else [], experiment)
        for s in settings(cls):
            problem = s.allowed.problem(getattr(section, s.name)) if s.allowed else None
            if problem:
                fail(dotted(prefix, s.name), problem)

    games = MODE_GAMES.get(env.distribution_mode)
    if games is not None and env.env_name not in games:
        fail(
            "env_config.distribution_mode",
            f"{env.env_name} has no {env.distribution_mode} mode; games with it: {', '.join(sorted(games))}",
        )
    if env.start_level + env.num_levels > INT32_MAX:
        fail(
            "env_config.start_level",
            f"start_level + num_levels = {env.start_level} + {env.num_levels} "
            f"must be at most {INT32_MAX} (Procgen level seeds are 31-bit)",
        )
    if algo.train_batch_size % algo.num_minibatches:
        fail(
            "algorithm.num_minibatches",
            f"{algo.num_minibatches} does not divide the batch of {algo.train_batch_size} steps",
        )
    if algo.num_envs % max(1, res.num_env_runners):
        fail(
            "resources.num_env_runners",
            f"{res.num_env_runners} runners cannot split algorithm.num_envs={algo.num_envs} evenly",
        )
    if algo.name == "PPG" and res.num_learners > 1:
        fail(
            "resources.num_learners",
            f"PPG trains on one learner (0: in the driver, 1: a remote one), got {res.num_learners}: its "
            "auxiliary phase and buffer are not made for several (DDP)",
        )
    if algo.ppg.num_aux_rollouts > algo.ppg.n_iteration * algo.num_envs:
        fail(
            "algorithm.ppg.num_aux_rollouts",
            f"{algo.ppg.num_aux_rollouts} is more than the phase's n_iteration x num_envs = "
            f"{algo.ppg.n_iteration} x {algo.num_envs} rollouts",
        )
    per_runner = experiment.num_envs_per_env_runner
    if (experiment.seed + res.num_env_runners + 1) * per_runner - 1 > INT32_MAX:
        highest = (INT32_MAX + 1) // per_runner - res.num_env_runners - 1
        fail(
            "seed",
            f"{experiment.seed} gives env seeds beyond {INT32_MAX} with {per_runner} envs per runner "
            f"and {res.num_env_runners} runners; at most {highest} here",
        )
    if isinstance(algo.rllib.get("env_runners"), dict) and "sample_timeout_s" in algo.rllib["env_runners"]:
        fail(
            "algorithm.rllib.env_runners.sample_timeout_s",
            "not settable: a PPO iteration waits for every env runner's fragment, so that it trains on "
            "exactly the batch it sampled (a timeout drops a slow runner's fragment and samples another round)",
        )
    evaluation = experiment.evaluation
    if evaluation.episodes % evaluation.num_envs:
        fail(
            "evaluation.num_envs",
            f"{evaluation.num_envs} envs cannot share evaluation.episodes={evaluation.episodes} episodes equally",
        )
    if evaluation.num_envs % evaluation.num_env_runners:
        fail(
            "evaluation.num_env_runners",
            f"{evaluation.num_env_runners} runners cannot split evaluation.num_envs={evaluation.num_envs} evenly",
        )
    if not any(getattr(experiment.stop, k) for k in ("timesteps_total", "time_total_s", "training_iteration")):
        fail("stop", "set at least one of timesteps_total, time_total_s, training_iteration")


GIB = 2**30


def estimate_memory(experiment: Experiment) -> int:
    """Bytes of memory the frames of one training iteration take, at the least.

    Counts one copy of each frame buffer that grows with the config, with a frame of
    64 x 64 x 3 uint8 x `frame_stack`: the envs' current frames (num_envs), the sampled
    episodes (num_envs x (num_steps + 1); the extra frame bootstraps GAE), the learner's train
    batch (num_envs x num_steps) and one minibatch as float32, as the model's forward takes it.
    PPG adds its auxiliary phase's buffer, in the learner's host memory: every frame of a phase
    (n_iteration x num_envs x num_steps, uint8) with its value target and the 15 logits of the
    policy before the auxiliary phase (float32): 6.0 GiB at the paper's sizes.
    Ray, torch, the weights, the activations, the games' own state and RLlib's intermediate
    copies come on top: an experiment refused by `check_memory` cannot run, one it passes may
    still need more.
    """
    algo = experiment.algorithm
    frame = math.prod(FRAME_SHAPE) * experiment.env_config.frame_stack  # bytes, uint8
    envs = algo.num_envs * frame
    episodes = algo.num_envs * (algo.num_steps + 1) * frame
    train_batch = algo.train_batch_size * frame
    float_minibatch = algo.minibatch_size * frame * 4
    return envs + episodes + train_batch + float_minibatch + auxiliary_buffer_bytes(experiment)


def auxiliary_buffer_bytes(experiment: Experiment) -> int:
    """PPG's buffer of a phase: its frames, value targets and pre-phase logits; 0 for other algorithms."""
    algo, ppg = experiment.algorithm, experiment.algorithm.ppg
    if algo.name != "PPG" or not ppg.e_aux:
        return 0
    frame = math.prod(FRAME_SHAPE) * experiment.env_config.frame_stack
    return ppg.n_iteration * algo.train_batch_size * (frame + 4 * (1 + NUM_ACTIONS))


def check_memory(experiment: Experiment, available_bytes: int) -> None:
    """Refuse, in one line, an experiment whose frames alone exceed `available_bytes`."""
    need = estimate_memory(experiment)
    if need > available_bytes:
        algo = experiment.algorithm
        kept = (
            f" (x algorithm.ppg.n_iteration={algo.ppg.n_iteration} kept)" if auxiliary_buffer_bytes(experiment) else ""
        )
        raise ConfigError(
            f"algorithm.num_envs={algo.num_envs} x algorithm.num_steps={algo.num_steps} frames{kept} with "
            f"env_config.frame_stack={experiment.env_config.frame_stack} need at least {need / GIB:.1f} GiB "
            f"(procgen_rl.config.estimate_memory), more than the {available_bytes / GIB:.1f} GiB here; lower "
            "one of them"
        )


def experiment_to_dict(experiment: Experiment) -> dict:
    return dataclasses.asdict(experiment)


def save_experiment(experiment: Experiment, path: Path) -> None:
    """Write the resolved config; `load_experiment` reads it back to the same Experiment."""
    path.write_text(yaml.safe_dump(experiment_to_dict(experiment), sort_keys=False))
