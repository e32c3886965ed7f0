"""A benchmark suite: one base experiment trained over a grid of overrides, each cell an ordinary run.

    experiment: experiments/smoke.yaml      # the base experiment
    budget: {timesteps_total: 1024}         # replaces its stop section in every cell
    set: {env_config.num_levels: 200}       # optional: the same overrides in every cell
    grid:                                   # dotted keys as --set takes them; a cell per combination
      env_config.env_name: [coinrun, starpilot]
      seed: [0, 1]

A cell's run directory is <suite dir>/<cell>/, named after its axis values (`coinrun_seed-0`),
so `rollout`, `tensorboard` and `train --resume` work on it. The suite directory keeps the suite
as it was run (suite.yaml): a rerun of the directory must be the same suite, may change only the
budget, skips finished cells and resumes interrupted ones from their checkpoints.
Nothing here starts Ray.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from procgen_rl.config import Experiment, RunName, StopConfig, apply_overrides, load_experiment
from procgen_rl.errors import ConfigError, UserError
from procgen_rl.run_dir import RunDir, TrainState, results_root
from procgen_rl.trainer import stop_reason

SUITE_FILE = "suite.yaml"
GAME_AXIS = "env_config.env_name"
SEED_AXIS = "seed"
KEYS = ("name", "experiment", "budget", "set", "grid")
STOP_KEYS = tuple(f.name for f in dataclasses.fields(StopConfig))


@dataclass(frozen=True)
class Cell:
    """One combination of the grid's values: a run."""

    name: str
    axes: dict[str, Any]  # this cell's value on each axis, in grid order


@dataclass(frozen=True)
class Suite:
    name: str
    experiment: str  # the base experiment file, as written (relative to the current directory)
    budget: dict[str, Any]  # stop section: every StopConfig key
    fixed: dict[str, Any]  # `set`: overrides of every cell
    grid: dict[str, list[Any]]
    source: str  # where it was read from, for errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "experiment": self.experiment,
            "budget": self.budget,
            "set": self.fixed,
            "grid": self.grid,
        }

    def cells(self) -> list[Cell]:
        combinations = itertools.product(*([(key, value) for value in values] for key, values in self.grid.items()))
        cells = [Cell(cell_name(dict(axes)), dict(axes)) for axes in combinations]
        names: dict[str, Cell] = {}
        for cell in cells:
            if cell.name in names:
                raise ConfigError(
                    f"{self.source}: grid: cells {names[cell.name].axes} and {cell.axes} get the same directory "
                    f"name {cell.name!r}; make the values differ in letters or digits"
                )
            names[cell.name] = cell
        return cells

    def overrides(self, cell: Cell) -> dict[str, Any]:
        """Everything a cell sets on the base experiment, as `--set` keys."""
        stop = {f"stop.{key}": value for key, value in self.budget.items()}
        return {**self.fixed, **cell.axes, **stop, "name": cell.name}


def cell_name(axes: dict[str, Any]) -> str:
    """`coinrun_seed-0`, `coinrun_name-APPO_seed-0`: the game as is, other axes as leaf-value."""
    parts = []
    for key, value in axes.items():
        text = re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-.") or "x"
        parts.append(text if key == GAME_AXIS else f"{key.rsplit('.', 1)[-1]}-{text}")
    return "_".join(parts)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"suite file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: malformed YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with {', '.join(KEYS)}")
    return raw


def checked(key: str, value: Any, source: str) -> Any:
    """`value` as an override of `key` takes it (typed: "8e6" becomes 8000000); an unknown key or a
    wrong type is an error naming `source` and the key."""
    node = apply_overrides({}, {key: value}, source)
    for part in key.split("."):
        node = node[part]
    return node


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite: its keys, its grid, its budget; `plan` checks every cell's experiment."""
    path = Path(path)
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    for key in ("experiment", "budget", "grid"):
        if raw.get(key) is None:
            raise ConfigError(
                f"{path}: no {key}; a suite names an experiment, a budget and a grid (docs/benchmarks.md)"
            )
    name = str(raw.get("name") or path.stem)
    problem = RunName().problem(name)
    if problem:
        raise ConfigError(f"{path}: name: {problem}")
    if not Path(raw["experiment"]).is_file():
        raise ConfigError(f"{path}: experiment: {raw['experiment']} not found (relative to the current directory)")
    budget, fixed, grid = raw["budget"], raw.get("set") or {}, raw["grid"]
    for key, value in (("budget", budget), ("set", fixed), ("grid", grid)):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key}: expected a mapping, got {value!r}")
    if not grid:
        raise ConfigError(f"{path}: grid is empty; give at least one axis, e.g. {SEED_AXIS}: [0, 1, 2]")
    unknown = sorted(set(budget) - set(STOP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: budget: unknown key {unknown[0]!r}; allowed: {', '.join(STOP_KEYS)}")
    stop = {key: checked(f"stop.{key}", budget.get(key, 0), f"{path}: budget") for key in STOP_KEYS}
    if not any(stop.values()):
        raise ConfigError(f"{path}: budget: set at least one of {', '.join(STOP_KEYS)}")
    for section, keys in (("set", fixed), ("grid", grid)):
        for key in keys:
            if key == "name" or key.split(".")[0] == "stop":
                owner = "the cells' names" if key == "name" else "the budget's"
                raise ConfigError(f"{path}: {section}: {key} is {owner}; leave it out of {section}")
    fixed = {key: checked(key, value, f"{path}: set") for key, value in fixed.items()}
    axes = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid: {key}: expected a non-empty list of values, got {values!r}")
        axes[key] = [checked(key, value, f"{path}: grid") for value in values]
        if len({json.dumps(v, sort_keys=True) for v in axes[key]}) < len(values):
            raise ConfigError(f"{path}: grid: {key}: a value is listed twice in {values}")
    suite = Suite(name, str(raw["experiment"]), stop, fixed, axes, str(path))
    suite.cells()  # distinct directory names
    return suite


@dataclass(frozen=True)
class PlannedCell:
    """A cell of a suite directory, checked: its run, its experiment, and what is left to do."""

    cell: Cell
    run: RunDir
    experiment: Experiment
    status: str  # finished | resume | new


def new_directory(suite: Suite) -> Path:
    return results_root() / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_directory(suite: Suite, directory: Path) -> str | None:
    """Refuse a directory of another suite (or no suite); say so when the budget changed."""
    saved_path = directory / SUITE_FILE
    if not saved_path.is_file():
        if directory.is_dir() and any(directory.iterdir()):
            raise UserError(f"{directory}: not a suite directory (no {SUITE_FILE}) and not empty; give another --dir")
        return None
    saved = load_suite(saved_path)
    if saved.name != suite.name:
        raise UserError(
            f"{directory} is a directory of suite {saved.name!r}, not {suite.name!r} ({suite.source}); "
            "give this suite its own --dir, or none for a new one"
        )
    for key in ("experiment", "set", "grid"):
        if saved.to_dict()[key] != suite.to_dict()[key]:
            raise UserError(
                f"{directory} holds suite {suite.name!r} with another {key} ({saved.to_dict()[key]} there, "
                f"{suite.to_dict()[key]} in {suite.source}); a rerun must be the same suite, only its budget may change"
            )
    if saved.budget != suite.budget:
        return f"budget changed from {saved.budget} to {suite.budget}: cells continue to the new one"
    return None


def finished(run: RunDir, experiment: Experiment) -> bool:
    """Stopped cleanly with the budget reached (not by a signal); the wall-time limit counts as
    reached within one iteration, as the trainer stops before overrunning it."""
    if not run.stopped_path.is_file():
        return False
    stopped = json.loads(run.stopped_path.read_text())
    if stopped.get("stop_reason") == "signal":
        return False
    state = TrainState(**{f.name: stopped[f.name] for f in dataclasses.fields(TrainState) if f.name in stopped})
    return stop_reason(experiment, state, state.time_total_s / max(1, state.iteration)) is not None


def plan(suite: Suite, directory: Path) -> list[PlannedCell]:
    """Every cell of `suite` in `directory`, its experiment checked: a cell with a run keeps the
    config it trained with, the suite's budget applied (as `train --resume --set stop...`)."""
    budget = {f"stop.{key}": value for key, value in suite.budget.items()}
    planned = []
    for cell in suite.cells():
        run = RunDir(directory / cell.name)
        if run.is_locked():
            raise UserError(f"{run.path} is being trained by another process; stop it first or wait")
        if run.config_path.is_file():
            experiment = load_experiment(run.config_path, budget, f"{suite.source}: budget")
            status = "finished" if finished(run, experiment) else "resume" if run.checkpoints() else "new"
        else:
            experiment = load_experiment(suite.experiment, suite.overrides(cell), f"{suite.source}: cell {cell.name}:")
            status = "new"
        planned.append(PlannedCell(cell, run, experiment, status))
    return planned


def save(suite: Suite, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SUITE_FILE).write_text(
        f"# suite {suite.name}, as run from {suite.source}; a rerun of this directory must be the same suite\n"
        + yaml.safe_dump(suite.to_dict(), sort_keys=False)
    )
