"""The SageMaker training contract, and the only module that knows SageMaker's paths.

SageMaker runs `docker run IMAGE train`; the sagemaker-training toolkit's `train` runs
/opt/ml/code/sagemaker_entry.py, which calls `main()` here on every host:

    /opt/ml/input/config/hyperparameters.json  experiment overrides, same dotted keys as --set,
                                               plus `experiment` (a file in the image's experiments/)
    /opt/ml/input/config/resourceconfig.json   hosts; the head is the first GPU-group host
                                               (instance groups) or the first host
    /opt/ml/checkpoints/                       checkpoints (SageMaker syncs them to S3 on spot
                                               jobs; a restarted job resumes from them)
    /opt/ml/output/data/run/                   config.yaml, TensorBoard events, metrics
    /opt/ml/model/                             final checkpoint + config.yaml (a run directory
                                               `procgen-rl rollout` reads) + policy.pt2
    /opt/ml/output/failure                     first line: why the job failed

Every host resolves the experiment from its hyperparameters once and plans the job's layout from
resourceconfig.json's instance types (`job_experiment`, which the host-side launchers call too,
so a job is checked before it starts and every host plans the same). The head writes it as the
run's config.yaml, starts a Ray head and trains; other hosts join as workers, each with its env
runner slots. No S3 signal files:
workers find the head by its host name and authenticate with the shared RAY_AUTH_TOKEN from the
job's environment. SAGEMAKER_BASE_DIR moves /opt/ml.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procgen_rl import envvars
from procgen_rl.config import Experiment, read_experiment
from procgen_rl.errors import ConfigError, UserError
from procgen_rl.layout import (
    HostSpec,
    Layout,
    check_fits_host,
    instance_host,
    place,
    this_host,
    unknown_instance_type,
    visible_gpus,
)
from procgen_rl.runtime import ray_nodes
from procgen_rl.signals import Stopped, TwoStageStop, exit_code

CONTAINER_BASE = Path("/opt/ml")
RUN_SUBDIR = Path("output/data/run")  # the run directory: events, config.yaml, steps_by_host.json
CHECKPOINTS_SUBDIR = Path("checkpoints")
EXPERIMENTS_DIR = Path("experiments")  # relative to the working directory: /opt/ml/code in the image
EXPERIMENT_KEY = "experiment"
DEFAULT_EXPERIMENT = "ppo-8m.yaml"
GPU_FAMILIES = ("ml.g", "ml.p")  # g4dn, g5, p3, p4d...: GPU instance types
# The SDK's instance types in local mode: containers on this machine, with its GPUs in the second.
LOCAL_MODE, LOCAL_GPU_MODE = "local", "local_gpu"
JOIN_TIMEOUT_S = 300  # hosts of one job start within seconds of each other; this is generous
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
    resources: dict[str, Any]  # resourceconfig.json: the instance type of every host

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


def experiment_path(name: str) -> Path:
    """The file an `experiment` hyperparameter names: inside experiments/, nowhere else.

    Accepts `smoke`, `smoke.yaml` and `experiments/smoke.yaml`. A job reads no other file, so an
    error never quotes the content of a file that is not an experiment.
    """
    relative = (
        Path(name).relative_to(EXPERIMENTS_DIR) if Path(name).parts[:1] == (EXPERIMENTS_DIR.name,) else Path(name)
    )
    if relative.is_absolute() or len(relative.parts) != 1 or relative.name.startswith("."):
        raise ConfigError(
            f"hyperparameter {EXPERIMENT_KEY}: {name!r} is not a file in {EXPERIMENTS_DIR}/; "
            f"name one of the image's experiments, e.g. smoke.yaml"
        )
    return EXPERIMENTS_DIR / (relative.name if relative.suffix == ".yaml" else f"{relative.name}.yaml")


def encode_hyperparameters(experiment_file: str, overrides: dict[str, Any]) -> dict[str, str]:
    """The job's hyperparameters: `experiment` (its path inside the image) + overrides, JSON-encoded.

    Only files under experiments/ are in the image; nothing else is uploaded with the job.
    """
    if not Path(experiment_file).resolve().is_relative_to(EXPERIMENTS_DIR.resolve()):
        raise UserError(
            f"{experiment_file}: the image only holds {EXPERIMENTS_DIR}/*.yaml; put the file there "
            "and rebuild the image"
        )
    values = {EXPERIMENT_KEY: os.path.relpath(experiment_file), **overrides}
    return {key: json.dumps(value) for key, value in values.items()}


def decode_hyperparameter(text: Any) -> Any:
    """The SDK JSON-encodes each value ("\\"starpilot\\"", "8000000"), a client that encodes it
    again sends it twice encoded; the console sends plain text. All three give the value."""
    while isinstance(text, str):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        if decoded == text:
            return decoded
        text = decoded
    return text


def job_experiment(hyperparameters: dict[str, Any], resources: dict[str, Any]) -> tuple[Experiment, Layout]:
    """The job's experiment, resolved once per host, with its layout on the job's hosts.

    `experiment` names the file; every other hyperparameter overrides a value. The host-side
    launchers call this too, with the resourceconfig.json the job will have, so a job is checked,
    and means the same, before it starts.
    """
    experiment, explicit = hyperparameter_experiment(hyperparameters)
    return experiment, job_layout(experiment, explicit, resources)


def hyperparameter_experiment(hyperparameters: dict[str, Any]) -> tuple[Experiment, frozenset[str]]:
    """The experiment the hyperparameters name, and the keys the file or the hyperparameters set."""
    overrides = dict(hyperparameters)
    path = experiment_path(str(overrides.pop(EXPERIMENT_KEY, DEFAULT_EXPERIMENT)))
    return read_experiment(path, overrides, override_source="hyperparameter")


def job_layout(experiment: Experiment, explicit: frozenset[str], resources: dict[str, Any]) -> Layout:
    """Place the env runners on every host of the job (procgen_rl.layout); the head learns.

    Every host plans from the instance types in resourceconfig.json, not from what it measures, so
    all of them agree on each host's runners.
    """
    hosts = host_specs(resources)
    head = next(spec for spec in hosts if spec.name == head_host(resources))
    why = f"{len(hosts)} host{'s' * (len(hosts) != 1)} ({', '.join(sorted({h.kind for h in hosts}))})"
    return place(experiment, explicit, head, hosts, why, spread=len(hosts) > 1)


def host_specs(resources: dict[str, Any]) -> list[HostSpec]:
    """Every host of the job as the layout sees it: its instance type's entry in the table; in
    local mode this machine, shared by the job's hosts; a type the table lacks measured on a host
    of that type (all hosts of one type are alike), else an error."""
    types = {host: group["instance_type"] for group in resources.get("instance_groups", []) for host in group["hosts"]}
    here = resources.get("current_instance_type", "")
    hosts = all_hosts(resources)
    specs = []
    for host in hosts:
        kind = types.get(host, here)
        spec = instance_host(host, kind)
        if spec is None and kind.startswith(LOCAL_MODE):
            machine = this_host()
            shared = max(1, machine.cpus // len(hosts))
            gpus = (machine.gpus, machine.gpu_memory_gib) if kind == LOCAL_GPU_MODE else (0, 0.0)
            spec = HostSpec(host, shared, *gpus, f"{kind} mode, 1/{len(hosts)} of this machine")
        elif spec is None and kind == here:
            spec = dataclasses.replace(this_host(host), kind=kind)
        elif spec is None:
            raise unknown_instance_type(kind)
        specs.append(spec)
    return specs


def infer_on_the_cpu(experiment: Experiment, explicit: frozenset[str]) -> bool:
    """The plan gave the runners GPU shares, but the head sees no GPU (a CPU image on a GPU type):
    they infer on the CPU instead, unless the user set the shares. True when they moved."""
    res = experiment.resources
    if not res.num_gpus_per_env_runner or "resources.num_gpus_per_env_runner" in explicit:
        return False
    res.num_gpus_per_env_runner = 0.0
    return True


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
    return Path(os.environ.get(envvars.SAGEMAKER_BASE_DIR, CONTAINER_BASE))


def read_json_object(path: Path, required: bool = True) -> dict[str, Any]:
    """A SageMaker config file as a mapping, or one line naming the file and what is wrong."""
    if not path.is_file() and not required:
        return {}
    try:
        value = json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(
            f"{path}: unreadable ({err.strerror}); is this running as a SageMaker training job?"
        ) from None
    except ValueError as err:
        raise ConfigError(f"{path}: not JSON ({err})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_training_env() -> TrainingEnv:
    base = base_dir()
    config_dir = base / "input" / "config"
    resources = read_json_object(config_dir / "resourceconfig.json")
    raw = read_json_object(config_dir / "hyperparameters.json", required=False)
    hyperparameters = {k: decode_hyperparameter(v) for k, v in raw.items() if not k.startswith("sagemaker_")}
    hosts = all_hosts(resources)
    current = resources.get("current_host")
    if not isinstance(current, str) or current not in hosts:
        raise ConfigError(
            f"{config_dir / 'resourceconfig.json'}: current_host {current!r} is not one of its hosts {list(hosts)}"
        )
    return TrainingEnv(base, hyperparameters, current, hosts, head_host(resources), resources)


def export_model(env: TrainingEnv, checkpoint: Path, experiment_config: Path) -> None:
    """/opt/ml/model becomes a run directory (config + final checkpoint) plus a portable policy."""
    from procgen_rl.rollout import export_policy

    env.model_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(experiment_config, env.model_path / "config.yaml")
    target = env.model_path / "checkpoints" / checkpoint.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(checkpoint, target)
    export_policy(checkpoint, env.model_path / POLICY_FILE)


def train_head(env: TrainingEnv, experiment: Experiment, slots: int) -> None:
    """Write the run's config.yaml, start the Ray head of a multi-host job, train, export the model."""
    from procgen_rl.run_dir import RunDir
    from procgen_rl.trainer import train

    run = RunDir(env.run_path, checkpoints_path=env.checkpoints_path)
    run.write_config(experiment)
    if len(env.hosts) > 1:
        ray_nodes.start_head(slots, slots * experiment.resources.num_cpus_per_env_runner)
    checkpoint = run.latest_checkpoint()
    if checkpoint:
        print(f"resuming from {checkpoint} (SageMaker restored /opt/ml/checkpoints)", flush=True)
    outcome = train(experiment, run, resume=checkpoint is not None, nodes=len(env.hosts))
    export_model(env, Path(outcome.checkpoint), run.config_path)
    print(f"model exported to {env.model_path}", flush=True)


def main() -> int:
    """Run this host's part of the job; on failure write the failure file and exit non-zero."""
    env = None
    try:
        with TwoStageStop():  # stopped before the training loop: exit at once, quietly
            env = read_training_env()
            os.environ[envvars.HOST_LABEL] = env.current_host  # inherited by this host's Ray workers
            print(f"host {env.current_host} of {', '.join(env.hosts)}; head {env.head_host}", flush=True)
            experiment, explicit = hyperparameter_experiment(env.hyperparameters)
            layout = job_layout(experiment, explicit, env.resources)
            slots = layout.runners_on(env.current_host)
            if len(env.hosts) > 1:
                ray_nodes.require_auth_token()
            if env.is_head:
                check_fits_host(experiment)
                print(layout.describe(), flush=True)
                if not visible_gpus()[0] and infer_on_the_cpu(experiment, explicit):
                    print(f"{env.current_host}: no GPU visible here: the env runners infer on the CPU", flush=True)
                train_head(env, experiment, slots)
            else:
                cpus = slots * experiment.resources.num_cpus_per_env_runner
                ray_nodes.join(env.head_host, slots, JOIN_TIMEOUT_S, cpus)
        return 0
    except Stopped as stop:
        return exit_code(stop.signum)
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
