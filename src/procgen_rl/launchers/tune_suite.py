"""`procgen-rl benchmark`: a suite's cells as Ray Tune trials, on whatever Ray there is.

The suite joins the cluster in RAY_ADDRESS (a compose head's, for a driver attached with
`docker compose exec`) or starts a local Ray. Each cell is one trial of a function trainable that
trains the cell's run directory with the project's trainer. A trial asks for what RLlib asks for
the experiment (`default_resource_request`: the driver with its learner, the env runners, any
remote learners), as one placement group; Tune captures the trial's child actors in it, so the
env runners the trainer starts are placed there, and trials run side by side as they fit
(`--max-concurrent` caps them). Tune's own state (experiment state, each trial's result.json
and its stdout and stderr) stays in <suite dir>/tune/<timestamp>/.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procgen_rl import envvars
from procgen_rl.errors import UserError
from procgen_rl.launchers.native import local_ray_token
from procgen_rl.layout import check_fits_host
from procgen_rl.suite import PlannedCell, Suite, check_directory, finished, plan, save

TUNE_DIR = "tune"
TOKEN_CPU = 0.01  # a bundle for an actor that reserves no resources
TUNE_METRICS = ("timesteps_total", "episode_reward_mean", "normalized_score", "eval_test_normalized_score")


@dataclass(frozen=True)
class CellOutcome:
    cell: PlannedCell
    finished: bool
    error: str | None  # the trial's error, last line, when it failed


def train_cell(config: dict[str, Any]) -> None:
    """The trial: train one cell's run directory (resuming its checkpoints); a few of each
    iteration's metrics go to Tune's status table."""
    from ray import tune

    from procgen_rl.trainer import train_run_dir

    def report(metrics: dict[str, float]) -> None:
        tune.report({key: value for key, value in metrics.items() if key in TUNE_METRICS})

    train_run_dir(Path(config["run"]), on_iteration=report)


def resource_request(cell: PlannedCell) -> Any:
    """RLlib's placement group for the cell's experiment. RLlib places an env runner in the bundle
    at its position, so every bundle stays; one that reserves nothing (evaluation env runners with
    no CPU) gets a token CPU share, as Ray refuses an empty bundle, taken from the driver's bundle
    so that the cell asks for the CPUs RLlib asks for (a cell sized to a 2-CPU machine fits it).
    Building the algorithm config checks the model and algorithm, as every launcher does before
    anything starts."""
    from ray.tune import PlacementGroupFactory

    from procgen_rl.trainer import build_algorithm_config

    config = build_algorithm_config(cell.experiment)
    request = config.algo_class.default_resource_request(config)
    bundles = [dict(bundle) or {"CPU": TOKEN_CPU} for bundle in request.bundles]
    tokens = TOKEN_CPU * sum(not bundle for bundle in request.bundles)
    if bundles[0].get("CPU", 0) > tokens:
        bundles[0]["CPU"] -= tokens
    return PlacementGroupFactory(bundles, strategy=request.strategy)


def check_fits_cluster(requests: dict[str, Any]) -> None:
    """A trial that can never be placed would wait forever: refuse it in one line."""
    import ray

    available = ray.cluster_resources()
    for name, request in requests.items():
        for resource, amount in request.required_resources.items():
            if amount > available.get(resource, 0):
                raise UserError(
                    f"cell {name} needs {amount:.4g} {resource} (resources.* of its experiment) but the Ray "
                    f"cluster has {available.get(resource, 0):g}; lower them in the suite's set, or give more"
                )


def run(suite: Suite, directory: Path, max_concurrent: int | None) -> list[CellOutcome]:
    """Train every cell of `suite` not yet finished in `directory`; return each cell's outcome."""
    if max_concurrent is not None and max_concurrent < 1:
        raise UserError(f"--max-concurrent must be >= 1, got {max_concurrent}")
    # Ray reads these when it is imported. Trials keep the working directory (relative paths in
    # experiments; Tune passes the variable on to them), and log lines of trials are not merged.
    local_ray_token()
    os.environ[envvars.RAY_CHDIR_TO_TRIAL_DIR] = "0"
    os.environ.setdefault(envvars.RAY_DEDUP_LOGS, "0")
    note = check_directory(suite, directory)
    cells = plan(suite, directory)
    for cell in cells:
        check_fits_host(cell.experiment)
    todo = [cell for cell in cells if cell.status != "finished"]
    counts = {status: sum(c.status == status for c in cells) for status in ("finished", "resume", "new")}
    print(
        f"suite {suite.name}: {len(cells)} cells in {directory}: {counts['finished']} finished, "
        f"{counts['resume']} to resume, {counts['new']} new",
        flush=True,
    )
    if note:
        print(note, flush=True)
    if not todo:
        return [CellOutcome(cell, True, None) for cell in cells]
    requests = {cell.cell.name: resource_request(cell) for cell in todo}
    errors = _tune(suite, directory, todo, requests, max_concurrent)
    return [CellOutcome(cell, finished(cell.run, cell.experiment), errors.get(cell.cell.name)) for cell in cells]


def _tune(
    suite: Suite, directory: Path, cells: list[PlannedCell], requests: dict[str, Any], max_concurrent: int | None
) -> dict[str, str]:
    """Run the cells as Tune trials; return the failed trials' errors by cell name. The suite
    directory is written once the cluster is known to hold every cell."""
    import ray
    from ray import tune

    from procgen_rl.trainer import start_ray

    names = {str(cell.run.path.resolve()): cell.cell.name for cell in cells}
    started = not ray.is_initialized()
    if started:
        start_ray(sum(max(1, cell.experiment.resources.num_env_runners) for cell in cells))
    try:
        check_fits_cluster(requests)
        save(suite, directory)
        for cell in cells:
            cell.run.write_config(cell.experiment)
        tuner = tune.Tuner(
            tune.with_resources(train_cell, lambda config: requests[names[config["run"]]]),
            param_space={"run": tune.grid_search(list(names))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent,
                trial_name_creator=lambda trial: names[trial.config["run"]],
                trial_dirname_creator=lambda trial: names[trial.config["run"]],
            ),
            run_config=tune.RunConfig(
                storage_path=str(directory.resolve() / TUNE_DIR), name=time.strftime("%Y%m%d-%H%M%S"), verbose=1
            ),
        )
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    return {
        names[result.config["run"]]: str(result.error).strip().splitlines()[-1]
        for result in results
        if result.error is not None
    }
