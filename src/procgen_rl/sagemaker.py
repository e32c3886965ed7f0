"""The SageMaker training contract, and the only module that knows SageMaker's paths.

SageMaker runs `docker run IMAGE train`; the sagemaker-training toolkit's `train` runs
/opt/ml/code/sagemaker_entry.py, which calls `main()` here on every host:

    /opt/ml/input/config/hyperparameters.json  experiment overrides, same dotted keys as --set,
                                               plus `experiment` (a file under experiments/)
    /opt/ml/input/config/resourceconfig.json   hosts; the head is the first GPU-group host
                                               (instance groups) or the first host
    /opt/ml/checkpoints/                       checkpoints (SageMaker syncs them to S3 on spot
                                               jobs; a restarted job resumes from them)
    /opt/ml/output/data/run/                   config.yaml, TensorBoard events, metrics
    /opt/ml/model/                             final checkpoint + config.yaml (a run directory
                                               `procgen-rl rollout` reads) + policy.pt2
    /opt/ml/output/failure                     first line: why the job failed

The head starts a Ray head and drives training; other hosts join as workers. With several hosts
every host gets one env runner (`resources.num_env_runners` overrides), so all of them sample.
No S3 signal files: workers find the head by its host name and authenticate with the shared
RAY_AUTH_TOKEN from the job's environment. SAGEMAKER_BASE_DIR moves /opt/ml.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procgen_rl import ray_cluster
from procgen_rl.config import Experiment, load_experiment, validate
from procgen_rl.errors import ConfigError, UserError
from procgen_rl.reporting import HOST_LABEL_ENV

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
CONTAINER_BASE = Path("/opt/ml")
RUN_SUBDIR = Path("output/data/run")  # the run directory: events, config.yaml, steps_by_host.json
CHECKPOINTS_SUBDIR = Path("checkpoints")
EXPERIMENT_KEY = "experiment"
DEFAULT_EXPERIMENT = "experiments/ppo-8m.yaml"
GPU_FAMILIES = ("ml.g", "ml.p")  # g4dn, g5, p3, p4d...: GPU instance types
JOIN_TIMEOUT_S = 300  # hosts of one job start within seconds of each other; this is generous
RUNNERS_PER_HOST = 1  # env runners each host takes when the job spans several hosts
POLICY_FILE = "policy.pt2"  # torch.export program: torch.export.load(path).module()(frames)


def failure_file(base: Path) -> Path:
    return base / "output" / "failure"


@dataclass(frozen=True)
class TrainingEnv:
    """What SageMaker tells this container, read once at start."""

    base: Path
    hyperparameters: dict[str, Any]
    current_host: str
    hosts: tuple[str, ...]
    head_host: str

    @property
    def is_head(self) -> bool:
        return self.current_host == self.head_host

    @property
    def run_path(self) -> Path:
        return self.base / RUN_SUBDIR

    @property
    def checkpoints_path(self) -> Path:
        return self.base / CHECKPOINTS_SUBDIR

    @property
    def model_path(self) -> Path:
        return self.base / "model"


def encode_hyperparameters(experiment_file: str, overrides: dict[str, Any]) -> dict[str, str]:
    """The job's hyperparameters: `experiment` (its path inside the image) + overrides, JSON-encoded.

    Only files under experiments/ are in the image; nothing else is uploaded with the job.
    """
    if not Path(experiment_file).resolve().is_relative_to(Path("experiments").resolve()):
        raise UserError(f"{experiment_file}: the image only holds experiments/*.yaml; put the file there "
                        "and rebuild the image (make image-cpu / make image-gpu)")
    values = {EXPERIMENT_KEY: os.path.relpath(experiment_file), **overrides}
    return {key: json.dumps(value) for key, value in values.items()}


def decode_hyperparameter(text: Any) -> Any:
    """The SDK JSON-encodes each value ("\\"starpilot\\"", "8000000"); the console sends plain text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def all_hosts(resource_config: dict) -> tuple[str, ...]:
    """Every host of the job, sorted: `hosts` and the hosts of each instance group (a heterogeneous
    job lists them per group; the union is right whichever of the two lists the others)."""
    hosts = set(resource_config.get("hosts", []))
    for group in resource_config.get("instance_groups", []):
        hosts.update(group.get("hosts", []))
    return tuple(sorted(hosts))


def head_host(resource_config: dict) -> str:
    """The first host of a GPU instance group (the learner), else the first host."""
    for group in resource_config.get("instance_groups", []):
        if group.get("instance_type", "").startswith(GPU_FAMILIES) and group.get("hosts"):
            return sorted(group["hosts"])[0]
    return all_hosts(resource_config)[0]


def base_dir() -> Path:
    return Path(os.environ.get(BASE_DIR_ENV, CONTAINER_BASE))


def read_training_env() -> TrainingEnv:
    base = base_dir()
    config_dir = base / "input" / "config"
    try:
        resources = json.loads((config_dir / "resourceconfig.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{config_dir / 'resourceconfig.json'}: unreadable ({err}); "
                          "is this running as a SageMaker training job?") from None
    hyperparameters_file = config_dir / "hyperparameters.json"
    raw = json.loads(hyperparameters_file.read_text()) if hyperparameters_file.is_file() else {}
    hyperparameters = {k: decode_hyperparameter(v) for k, v in raw.items() if not k.startswith("sagemaker_")}
    return TrainingEnv(base, hyperparameters, resources["current_host"], all_hosts(resources),
                       head_host(resources))


def experiment_from_hyperparameters(hyperparameters: dict[str, Any]) -> Experiment:
    """The experiment named by `experiment` with every other hyperparameter as an override."""
    overrides = dict(hyperparameters)
    path = str(overrides.pop(EXPERIMENT_KEY, DEFAULT_EXPERIMENT))
    return load_experiment(path, overrides, override_source="hyperparameter")


def export_model(env: TrainingEnv, checkpoint: Path, experiment_config: Path) -> None:
    """/opt/ml/model becomes a run directory (config + final checkpoint) plus a portable policy."""
    from procgen_rl.rollout import export_policy

    env.model_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(experiment_config, env.model_path / "config.yaml")
    target = env.model_path / "checkpoints" / checkpoint.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(checkpoint, target)
    export_policy(checkpoint, env.model_path / POLICY_FILE)


def train_head(env: TrainingEnv) -> None:
    from procgen_rl.run_dir import RunDir
    from procgen_rl.trainer import init_ray, train, wait_for_nodes

    experiment = experiment_from_hyperparameters(env.hyperparameters)
    if len(env.hosts) > 1:
        if "resources.num_env_runners" not in env.hyperparameters:
            experiment.resources.num_env_runners = RUNNERS_PER_HOST * len(env.hosts)
        experiment.resources.spread_env_runners = True
        validate(experiment, "hyperparameters", {})
        ray_cluster.start_head(slots=RUNNERS_PER_HOST)
        os.environ["RAY_ADDRESS"] = f"127.0.0.1:{ray_cluster.RAY_PORT}"
        init_ray(experiment)
        wait_for_nodes(len(env.hosts), JOIN_TIMEOUT_S)
    run = RunDir(env.run_path, checkpoints_path=env.checkpoints_path)
    checkpoint = run.latest_checkpoint()
    if checkpoint:
        print(f"resuming from {checkpoint} (SageMaker restored /opt/ml/checkpoints)", flush=True)
    outcome = train(experiment, run, resume=checkpoint is not None)
    export_model(env, Path(outcome.checkpoint), run.config_path)
    print(f"model exported to {env.model_path}", flush=True)


def main() -> int:
    """Run this host's part of the job; on failure write the failure file and exit non-zero."""
    env = None
    try:
        env = read_training_env()
        os.environ[HOST_LABEL_ENV] = env.current_host  # inherited by this host's Ray workers
        print(f"host {env.current_host} of {', '.join(env.hosts)}; head {env.head_host}", flush=True)
        if len(env.hosts) > 1:
            ray_cluster.require_auth_token()
        if env.is_head:
            train_head(env)
        else:
            ray_cluster.join(env.head_host, RUNNERS_PER_HOST, JOIN_TIMEOUT_S)
        return 0
    except UserError as err:
        reason, code = f"error: {err}", 2
    except Exception as err:  # a framework fault: keep the traceback in the log
        traceback.print_exc()
        reason, code = f"{type(err).__name__}: {err}", 1
    print(reason, file=sys.stderr, flush=True)
    failure = failure_file(env.base if env else base_dir())
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text(reason + "\n")
    return code
