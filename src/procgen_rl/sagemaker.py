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
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procgen_rl.config import ENV_RUNNER_SLOT, Experiment, load_experiment, validate
from procgen_rl.errors import ConfigError, UserError
from procgen_rl.reporting import HOST_LABEL_ENV

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
CONTAINER_BASE = Path("/opt/ml")
RUN_SUBDIR = Path("output/data/run")  # the run directory: events, config.yaml, steps_by_host.json
CHECKPOINTS_SUBDIR = Path("checkpoints")
EXPERIMENT_KEY = "experiment"
DEFAULT_EXPERIMENT = "experiments/ppo-8m.yaml"
RAY_PORT = 6379
GPU_FAMILIES = ("ml.g", "ml.p")  # g4dn, g5, p3, p4d...: GPU instance types
JOIN_TIMEOUT_S = 300
HEAD_GONE_AFTER_MISSES = 3  # head port checks, 5 s apart, that fail before a worker leaves
RUNNERS_PER_HOST = 1  # env runners each host takes when the job spans several hosts
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
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


def require_auth_token() -> None:
    """Every host must share one Ray token: the launcher puts a random one in the job's environment."""
    if not os.environ.get(AUTH_TOKEN_ENV):
        raise ConfigError(f"a multi-host job needs {AUTH_TOKEN_ENV} in its environment (the same on every "
                          "host); `procgen-rl sagemaker-local` and `procgen-rl cloud train` set a random one")
    os.environ["RAY_AUTH_MODE"] = "token"


def start_ray_head(env: TrainingEnv) -> None:
    _ray("start", "--head", f"--port={RAY_PORT}", "--include-dashboard=false", "--disable-usage-stats",
         f"--resources={json.dumps({ENV_RUNNER_SLOT: RUNNERS_PER_HOST})}")


def head_reachable(env: TrainingEnv) -> bool:
    try:
        socket.create_connection((env.head_host, RAY_PORT), timeout=5).close()
        return True
    except OSError:
        return False


def join_ray_cluster(env: TrainingEnv) -> None:
    """Join the head (waiting while it starts), sample until it finishes, then leave cleanly.

    The worker's job ends with the head's: exit 0 when the head is gone or SIGTERM arrives, so a
    finished job is not reported as a failed host. A join that fails is an error.
    """
    deadline = time.time() + JOIN_TIMEOUT_S
    while not head_reachable(env):
        if time.time() > deadline:
            raise RuntimeError(f"Ray head {env.head_host}:{RAY_PORT} unreachable for {JOIN_TIMEOUT_S} s")
        time.sleep(2)
    _ray("start", f"--address={env.head_host}:{RAY_PORT}", "--disable-usage-stats",
         f"--resources={json.dumps({ENV_RUNNER_SLOT: RUNNERS_PER_HOST})}")
    print(f"joined the Ray cluster at {env.head_host}; sampling until the head finishes", flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # taken below by sigtimedwait
    misses = 0
    while misses < HEAD_GONE_AFTER_MISSES:
        if signal.sigtimedwait({signal.SIGTERM}, 5):  # the job is being stopped: leave now
            break
        misses = 0 if head_reachable(env) else misses + 1
    _ray("stop", "--force")  # the job is over: nothing on this host is worth a grace period
    print("head finished; left the Ray cluster", flush=True)


def _ray(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "ray"), *args], check=True)


def wait_for_nodes(count: int) -> None:
    import ray

    deadline = time.time() + JOIN_TIMEOUT_S
    while len([n for n in ray.nodes() if n["Alive"]]) < count:
        if time.time() > deadline:
            raise RuntimeError(f"only {len(ray.nodes())} of {count} hosts joined the Ray cluster "
                               f"within {JOIN_TIMEOUT_S} s")
        time.sleep(2)
    print(f"Ray cluster: {count} hosts joined", flush=True)


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
    from procgen_rl.trainer import init_ray, train

    experiment = experiment_from_hyperparameters(env.hyperparameters)
    if len(env.hosts) > 1:
        if "resources.num_env_runners" not in env.hyperparameters:
            experiment.resources.num_env_runners = RUNNERS_PER_HOST * len(env.hosts)
        experiment.resources.spread_env_runners = True
        validate(experiment, "hyperparameters", {})
        start_ray_head(env)
        os.environ["RAY_ADDRESS"] = f"127.0.0.1:{RAY_PORT}"
        init_ray(experiment)
        wait_for_nodes(len(env.hosts))
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
            require_auth_token()
        if env.is_head:
            train_head(env)
        else:
            join_ray_cluster(env)
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
