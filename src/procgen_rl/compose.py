"""The compose cluster on this machine: a Ray head container and WORKERS CPU worker containers.

docker/docker-compose.yml defines the nodes; this module fills in its variables and drives
`docker compose` (v2, or v1's `docker-compose`). The head runs the training entry point as the
driver; env runners ask for `env_runner_slot` resources that only the workers offer (the head
offers them when WORKERS=0), so sampling spreads over the workers.

    train  up -> follow the logs until the head exits -> down (always, also on failure)
    up     a head that waits for drivers, plus workers; `down` and `logs` manage it
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Sequence

from procgen_rl.config import Experiment, validate
from procgen_rl.errors import UserError
from procgen_rl.ray_cluster import AUTH_TOKEN_ENV, CLIENT_PORT
from procgen_rl.run_dir import RunDir

PROJECT_DIR = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_DIR / "docker" / "docker-compose.yml"
PROJECT_NAME = "procgen-rl"
JOIN_TIMEOUT_S = 60  # a worker that cannot reach the head fails after this


def compose_command() -> list[str]:
    """`docker compose` (v2) where installed, else the standalone v1 `docker-compose`."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise UserError("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")


class Cluster:
    """One compose project: the variables docker-compose.yml needs, and the commands on it."""

    def __init__(self, image: str, workers: int, worker_slots: int = 1, head_slots: int = 0,
                 driver: Sequence[str] = ()) -> None:
        if not COMPOSE_FILE.is_file():
            raise UserError(f"{COMPOSE_FILE}: missing; run from a procgen-rl checkout")
        self.results = Path(os.environ.get("RESULTS_DIR", "results")).resolve()
        self.workers = workers
        self.command = [*compose_command(), "-p", PROJECT_NAME, "-f", str(COMPOSE_FILE)]
        self.env = {
            **os.environ,
            "PROCGEN_RL_IMAGE": image,
            "HOST_UID": str(os.getuid()),
            "HOST_GID": str(os.getgid()),
            "PROJECT_DIR": str(PROJECT_DIR),
            "RESULTS_DIR": str(self.results),
            AUTH_TOKEN_ENV: secrets.token_hex(16),
            "HEAD_SLOTS": str(head_slots),
            "WORKER_SLOTS": str(worker_slots),
            "JOIN_TIMEOUT_S": str(JOIN_TIMEOUT_S),
            "PROCGEN_RL_DRIVER": json.dumps(list(driver)) if driver else "",
            "RAY_CLIENT_PORT": str(CLIENT_PORT),
        }

    def compose(self, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, *args], env=self.env, check=check, **kwargs)

    def quietly(self, *args: str) -> None:
        """A compose command whose progress lines only matter when it fails."""
        result = self.compose(*args, check=False, capture_output=True, text=True)
        if result.returncode:
            raise UserError(f"`docker compose {' '.join(args)}` failed: {result.stderr.strip()[-2000:]}")

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service, capture_output=True, text=True).stdout.split()[0]

    def is_up(self) -> bool:
        return bool(self.compose("ps", "-q", capture_output=True, text=True, check=False).stdout.strip())

    def up(self) -> None:
        if self.is_up():
            raise UserError(f"a compose cluster ({PROJECT_NAME}) is already up: `make cluster-down` first")
        self.results.mkdir(parents=True, exist_ok=True)  # by the host user, before Docker would (as root)
        self.quietly("up", "--detach", "--scale", f"ray-worker={self.workers}")

    def down(self) -> None:
        self.quietly("down", "--timeout", "10")

    def run_driver(self) -> int:
        """Follow every node's log until the head (and its driver) exits; its exit code.

        The first Ctrl-C / SIGTERM stops the driver gracefully (it checkpoints); a second one
        leaves at once (`down` then kills the containers).
        """
        head = self.container("ray-head")
        logs = subprocess.Popen([*self.command, "logs", "--follow", "--no-color"], env=self.env)
        stopping = False

        def stop_driver(signum: int, frame: Any) -> None:
            nonlocal stopping
            if stopping:
                raise KeyboardInterrupt
            stopping = True
            print(f"\n{signal.Signals(signum).name}: stopping the driver after this iteration "
                  "(again to stop at once)", flush=True)
            subprocess.run(["docker", "kill", "--signal", "TERM", head], capture_output=True)

        previous = {s: signal.signal(s, stop_driver) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            waited = subprocess.run(["docker", "wait", head], capture_output=True, text=True, check=True)
            return int(waited.stdout.strip())
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            logs.terminate()


def cluster_resources(experiment: Experiment, workers: int, runners_set: bool) -> tuple[int, int]:
    """(head slots, slots per worker): runners go to the workers, or to the head when there are none.

    With workers and no explicit `resources.num_env_runners`, each worker runs one env runner.
    """
    resources = experiment.resources
    if workers == 0:
        return max(1, resources.num_env_runners), 0
    if not runners_set:
        resources.num_env_runners = workers
        validate(experiment, "compose", {"resources.num_env_runners": f"--workers {workers} (one env runner each)"})
    resources.spread_env_runners = True
    return 0, max(1, math.ceil(resources.num_env_runners / workers))


def train(experiment: Experiment, train_args: list[str], run: RunDir, workers: int, image: str,
          runners_set: bool) -> None:
    """Train on a fresh cluster: up, the head's driver runs `procgen-rl train ARGS`, down."""
    head_slots, worker_slots = cluster_resources(experiment, workers, runners_set)
    driver = ["procgen-rl", "train", *train_args,
              "--set", f"resources.num_env_runners={experiment.resources.num_env_runners}",
              "--set", f"resources.spread_env_runners={str(experiment.resources.spread_env_runners).lower()}"]
    cluster = Cluster(image, workers, worker_slots, head_slots, driver)
    cluster.up()
    try:
        print(f"compose cluster: ray-head + {workers} ray-worker container(s); "
              f"{experiment.resources.num_env_runners} env runner(s)", flush=True)
        code = cluster.run_driver()
    finally:
        cluster.down()
    if code:
        raise UserError(f"training on the compose cluster ended with exit code {code} (log above); "
                        f"`make train-local` resumes {run.path} from its last checkpoint")
