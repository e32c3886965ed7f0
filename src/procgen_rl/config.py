"""The experiment: one typed config, filled the same way from YAML, `--set` and hyperparameters.

Every value passes through `coerce`, so "8e6", 8000000 and 8e6 all become the int 8000000, and
every error names where the value came from (file or `--set`), the key, and what is allowed.
Nothing here imports Ray, torch or envpool.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from procgen_rl.errors import ConfigError
from procgen_rl.procgen import DISTRIBUTION_MODES, GAMES, MODE_GAMES


@dataclass
class EnvConfig:
    """Procgen options, named as in procgen's README, plus an optional frame stack."""

    env_name: str = "coinrun"  # one of the 16 games
    num_levels: int = 200  # unique training levels; 0 = unlimited
    start_level: int = 0  # seed of the first level
    distribution_mode: str = "easy"  # easy | hard | extreme | memory | exploration
    use_sequential_levels: bool = False  # next level on success instead of a fresh sample
    center_agent: bool = True
    use_backgrounds: bool = True
    restrict_themes: bool = False
    use_monochrome_assets: bool = False
    paint_vel_info: bool = False
    use_generated_assets: bool = False
    frame_stack: int = 1  # frames stacked along channels; 1 = none


@dataclass
class ModelConfig:
    """Which RLModule to build; `custom_model` is a registered name or `package.module:Class`."""

    custom_model: str = "impala_cnn"
    custom_model_config: dict = field(default_factory=dict)  # passed to the model as-is


@dataclass
class AlgorithmConfig:
    """Hyperparameters, named as in the Procgen paper and CleanRL; defaults are the paper's PPO."""

    name: str = "PPO"  # PPO | APPO | IMPALA | package.module:ConfigClass
    learning_rate: float = 5e-4
    gamma: float = 0.999
    gae_lambda: float = 0.95
    clip_coef: float = 0.2  # PPO/APPO surrogate clip range
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    update_epochs: int = 3  # passes over each batch
    num_minibatches: int = 8  # per epoch
    num_envs: int = 64  # environments in total, split evenly over the env runners
    num_steps: int = 256  # steps per environment per rollout
    normalize_reward: bool = True  # scale rewards by a running std of discounted returns
    rllib: dict = field(default_factory=dict)  # extra AlgorithmConfig calls: {section: {arg: value}}

    @property
    def train_batch_size(self) -> int:
        """Env steps per training iteration: num_envs × num_steps."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.train_batch_size // self.num_minibatches


@dataclass
class ResourcesConfig:
    """How the work is spread; launchers change these, the learning math does not change."""

    num_env_runners: int = 0  # remote sampling actors; 0 samples in the driver process
    num_cpus_per_env_runner: int = 1
    num_learners: int = 0  # remote learners; 0 learns in the driver process
    spread_env_runners: bool = False  # one env runner per unit of the hosts' "env_runner_slot" resource
    learner_device: str = "auto"  # auto (GPU when visible) | cpu | cuda


@dataclass
class StopConfig:
    """Training ends at whichever limit comes first; 0 disables a limit. Limits count across resumes."""

    timesteps_total: int = 8_000_000
    time_total_s: float = 0.0  # no iteration starts that would end past it (at the last one's pace)
    training_iteration: int = 0


@dataclass
class CheckpointConfig:
    frequency: int = 10  # checkpoint every N iterations (and always at the end); 0 = end only
    keep: int = 3  # most recent checkpoints kept; 0 = all


@dataclass
class Experiment:
    """A whole run: what to train, how, and when to stop."""

    name: str = "experiment"
    seed: int = 0
    env_config: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    callbacks: list[str] = field(default_factory=list)  # extra callbacks: names or module:Class

    @property
    def num_envs_per_env_runner(self) -> int:
        return self.algorithm.num_envs // max(1, self.resources.num_env_runners)


LEARNER_DEVICES = ("auto", "cpu", "cuda")
# The Ray custom resource a launcher gives each host (N units = N env runners there), so that
# with `spread_env_runners` sampling spreads over all hosts instead of packing onto the first.
ENV_RUNNER_SLOT = "env_runner_slot"


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
            f"{source}: unknown key '{prefix + '.' if prefix else ''}{unknown[0]}'; "
            f"allowed: {', '.join(fields)}"
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
    node, cls = raw, Experiment
    for i, part in enumerate(parts[:-1]):
        if cls is not None:
            hints = typing.get_type_hints(cls)
            if part not in hints:
                allowed = ", ".join(f.name for f in dataclasses.fields(cls))
                raise ConfigError(f"{source}: unknown key '{'.'.join(parts[:i + 1])}'; allowed: {allowed}")
            hint = hints[part]
            cls = hint if dataclasses.is_dataclass(hint) else None
            if cls is None and hint is not dict:
                raise ConfigError(f"{source}: '{'.'.join(parts[:i + 1])}' takes no sub-keys")
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


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None,
                    override_source: str = "--set") -> Experiment:
    """Read an experiment YAML, apply overrides, validate; raise ConfigError naming the culprit."""
    path = Path(path)
    if not path.is_file():
        known = sorted(str(p) for p in Path("experiments").glob("*.yaml"))
        hint = f"; available: {', '.join(known)}" if known else ""
        raise ConfigError(f"experiment file not found: {path}{hint}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{at}: malformed YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    overrides = overrides or {}
    origins = {key: f"{override_source} {key}" for key in overrides}
    return experiment_from_dict(apply_overrides(raw, overrides, override_source), str(path), origins)


def experiment_from_dict(raw: dict, source: str, origins: dict[str, str] | None = None) -> Experiment:
    """Build and validate; `origins` maps overridden keys to where they came from, for errors."""
    experiment = _build(Experiment, raw, source, "")
    validate(experiment, source, origins or {})
    return experiment


def validate(experiment: Experiment, source: str, origins: dict[str, str]) -> None:
    """Check values against what Procgen and the algorithm allow, before anything starts."""
    env, algo, res = experiment.env_config, experiment.algorithm, experiment.resources

    def fail(key: str, message: str) -> None:
        where = origins.get(key)
        raise ConfigError(f"{where}: {message}" if where else f"{source}: {key}: {message}")

    if env.env_name not in GAMES:
        fail("env_config.env_name", f"unknown game {env.env_name!r}; allowed: {', '.join(GAMES)}")
    if env.distribution_mode not in DISTRIBUTION_MODES:
        fail("env_config.distribution_mode",
             f"{env.distribution_mode!r} is not one of {', '.join(DISTRIBUTION_MODES)}")
    games = MODE_GAMES.get(env.distribution_mode)
    if games is not None and env.env_name not in games:
        fail("env_config.distribution_mode",
             f"{env.env_name} has no {env.distribution_mode} mode; games with it: {', '.join(sorted(games))}")
    for key in ("num_levels", "start_level"):
        if getattr(env, key) < 0:
            fail(f"env_config.{key}", "must be >= 0")
    if env.frame_stack < 1:
        fail("env_config.frame_stack", "must be >= 1 (1 = no stacking)")
    for key in ("num_envs", "num_steps", "update_epochs", "num_minibatches"):
        if getattr(algo, key) < 1:
            fail(f"algorithm.{key}", "must be >= 1")
    if not 0.0 < algo.gamma <= 1.0:
        fail("algorithm.gamma", f"must be in (0, 1], got {algo.gamma}")
    if not 0.0 <= algo.gae_lambda <= 1.0:
        fail("algorithm.gae_lambda", f"must be in [0, 1], got {algo.gae_lambda}")
    if algo.learning_rate <= 0:
        fail("algorithm.learning_rate", "must be > 0")
    if algo.train_batch_size % algo.num_minibatches:
        fail("algorithm.num_minibatches",
             f"{algo.num_minibatches} does not divide the batch of {algo.train_batch_size} steps")
    if algo.num_envs % max(1, res.num_env_runners):
        fail("resources.num_env_runners",
             f"{res.num_env_runners} runners cannot split algorithm.num_envs={algo.num_envs} evenly")
    if res.learner_device not in LEARNER_DEVICES:
        fail("resources.learner_device", f"{res.learner_device!r} is not one of {', '.join(LEARNER_DEVICES)}")
    for key in ("num_env_runners", "num_learners"):
        if getattr(res, key) < 0:
            fail(f"resources.{key}", "must be >= 0")
    for key in ("timesteps_total", "time_total_s", "training_iteration"):
        if getattr(experiment.stop, key) < 0:
            fail(f"stop.{key}", "must be >= 0 (0 = no limit)")
    if not any(getattr(experiment.stop, k) for k in ("timesteps_total", "time_total_s", "training_iteration")):
        fail("stop", "set at least one of timesteps_total, time_total_s, training_iteration")


def experiment_to_dict(experiment: Experiment) -> dict:
    return dataclasses.asdict(experiment)


def save_experiment(experiment: Experiment, path: Path) -> None:
    """Write the resolved config; `load_experiment` reads it back to the same Experiment."""
    path.write_text(yaml.safe_dump(experiment_to_dict(experiment), sort_keys=False))
