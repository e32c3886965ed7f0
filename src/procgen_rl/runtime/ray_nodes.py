"""Ray nodes inside the image: start a head, or join one as a worker and leave when it is gone.

Shared by the SageMaker contract (hosts algo-1, algo-2...) and the compose cluster (ray-head,
ray-worker; `procgen-rl node` runs them). Every node authenticates with the RAY_AUTH_TOKEN its
launcher generated, and offers `env_runner_slot` resources: env runners ask for one slot each,
so they land on the nodes the launcher gave slots to. Ray's ports stay inside the container network; the compose file
publishes the client port on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from procgen_rl import envvars
from procgen_rl.config import ENV_RUNNER_SLOT
from procgen_rl.errors import ConfigError, UserError
from procgen_rl.layout import usable_cpus

RAY_PORT = 6379
CLIENT_PORT = 10001  # Ray Client (ray://), for drivers outside the cluster
HEAD_CHECK_INTERVAL_S = 5
HEAD_GONE_AFTER_MISSES = 3  # head port checks in a row that fail before a worker leaves


def require_auth_token() -> None:
    """Every node must share one Ray token: the launcher puts a random one in the environment."""
    if not os.environ.get(envvars.RAY_AUTH_TOKEN):
        raise ConfigError(
            f"a multi-node Ray cluster needs {envvars.RAY_AUTH_TOKEN} in its environment (the "
            "same on every node): `procgen-rl train --backend compose|sagemaker` and `procgen-rl "
            "cloud train` set a random one; a job started with the SageMaker SDK passes it in "
            "`environment` (docs/sagemaker-contract.md)"
        )
    os.environ[envvars.RAY_AUTH_MODE] = "token"


def node_resources(slots: int, reserved_cpus: int) -> list[str]:
    """`ray start`'s resources for this node: its env runner slots, and the CPUs it may use as the
    layout counts them (affinity and cgroup quota: a container's `cpus:` limit; Ray's own count
    ignores the affinity and rounds a quota below 1 CPU down to none), at least the
    `reserved_cpus` its runners reserve: a host smaller than the instance type its job planned
    with (a test on a small machine) runs them crowded instead of waiting for CPUs forever."""
    cpus = max(usable_cpus(), reserved_cpus)
    return [f"--num-cpus={cpus}", f"--resources={json.dumps({ENV_RUNNER_SLOT: slots})}"]


def start_head(slots: int, reserved_cpus: int = 0) -> None:
    """A Ray head on this node (no dashboard), with `slots` env runner slots; this process and its
    children (the driver) join it through RAY_ADDRESS."""
    _ray(
        "start",
        "--head",
        f"--port={RAY_PORT}",
        f"--ray-client-server-port={CLIENT_PORT}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        *node_resources(slots, reserved_cpus),
    )
    os.environ[envvars.RAY_ADDRESS] = f"127.0.0.1:{RAY_PORT}"


def head_reachable(head: str) -> bool:
    try:
        socket.create_connection((head, RAY_PORT), timeout=HEAD_CHECK_INTERVAL_S).close()
        return True
    except OSError:
        return False


def join(head: str, slots: int, timeout_s: float, reserved_cpus: int = 0) -> None:
    """Join the head (waiting while it starts), sample until it finishes, then leave cleanly.

    A worker's job ends with the head's: return normally when the head is gone or SIGTERM
    arrives, so a finished run is not reported as a failed node. A head that stays unreachable
    for `timeout_s` is an error.
    """
    deadline = time.time() + timeout_s
    while not head_reachable(head):
        if time.time() > deadline:
            raise UserError(
                f"Ray head {head}:{RAY_PORT} unreachable for {timeout_s:.0f} s; "
                "is the head running and on this node's network?"
            )
        time.sleep(1)
    _ray(
        "start",
        f"--address={head}:{RAY_PORT}",
        "--disable-usage-stats",
        *node_resources(slots, reserved_cpus),
    )
    print(
        f"joined the Ray cluster at {head} with {slots} env runner slot(s); sampling until the head finishes",
        flush=True,
    )
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # taken below by sigtimedwait
    misses = 0
    while misses < HEAD_GONE_AFTER_MISSES:
        if signal.sigtimedwait({signal.SIGTERM}, HEAD_CHECK_INTERVAL_S):  # being stopped: leave now
            break
        misses = 0 if head_reachable(head) else misses + 1
    stop()
    print("head finished; left the Ray cluster", flush=True)


def run_head(slots: int, run_path: Path | None) -> int:
    """Serve as the head; with a run directory, train its config.yaml here and end with the result.

    Without one the head serves until SIGTERM (`docker stop`), for drivers attached later. The
    driver is this process: the trainer's own signal handling checkpoints on SIGTERM/SIGINT.
    """
    start_head(slots)
    try:
        if run_path is None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            print(f"Ray head up with {slots} env runner slot(s); waiting for drivers", flush=True)
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
            return 0
        from procgen_rl.trainer import train_run_dir

        train_run_dir(run_path)
        return 0
    finally:
        stop()


def stop() -> None:
    """Stop this node's Ray processes at once: the run is over, nothing needs a grace period.

    A head that trained in this process leaves Ray's driver first, so the driver does not outlive
    the cluster it is connected to (it would wait for the GCS, then fail the run).
    """
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    _ray("stop", "--force", quiet=True)  # it would list every process it kills


def _ray(*args: str, quiet: bool = False) -> None:
    subprocess.run(
        [str(Path(sys.executable).parent / "ray"), *args], check=True, stdout=subprocess.DEVNULL if quiet else None
    )
