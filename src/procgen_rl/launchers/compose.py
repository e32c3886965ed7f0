"""The compose backend: a Ray head container and WORKERS CPU worker containers on this machine.

docker/docker-compose.yml defines the nodes; this module fills in its variables and drives
`docker compose` (v2, or v1's `docker-compose`). The head trains the run directory the host
prepared (its config.yaml, mounted at the same path); env runners ask for `env_runner_slot`
resources that only the workers offer (the head offers them when WORKERS=0), so sampling
spreads over the workers. Each worker has a CPU limit (`cpus:`, this machine's CPUs shared by
the workers unless --worker-cpus says otherwise), and the layout sizes its runners to it.

    launch  up -> follow the logs until the head exits -> down (always, also on failure)
    up      a head that waits for drivers, plus workers; `down` and `logs` manage it
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from procgen_rl import envvars
from procgen_rl.errors import UserError
from procgen_rl.launchers import Job, LaunchOptions, Outcome
from procgen_rl.launchers.docker_engine import check_docker
from procgen_rl.layout import HostSpec, Layout, usable_cpus
from procgen_rl.layout import place as place_runners
from procgen_rl.run_dir import results_root
from procgen_rl.runtime.ray_nodes import CLIENT_PORT
from procgen_rl.signals import Stopped, TwoStageStop, exit_code

PROJECT_DIR = Path(__file__).resolve().parents[3]  # src/procgen_rl/launchers/compose.py
COMPOSE_FILE = PROJECT_DIR / "docker" / "docker-compose.yml"
PROJECT_NAME = "procgen-rl"
JOIN_TIMEOUT_S = 60  # a worker that cannot reach the head fails after this
HEAD, WORKER = "ray-head", "ray-worker"  # the services of docker-compose.yml


def compose_command() -> list[str]:
    """`docker compose` (v2) where installed, else the standalone v1 `docker-compose`."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise UserError("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")


class Cluster:
    """One compose project: the variables docker-compose.yml needs, and the commands on it."""

    def __init__(
        self,
        image: str,
        workers: int,
        worker_slots: int = 1,
        head_slots: int = 0,
        run: Path | None = None,
        cpus: float | None = None,
    ) -> None:
        """`run`: the run directory the head trains (absolute, under RESULTS_DIR); None: wait for
        drivers. `cpus`: each worker's CPU limit (default: `worker_cpus`)."""
        if not COMPOSE_FILE.is_file():
            raise UserError(f"{COMPOSE_FILE}: missing; run from a procgen-rl checkout")
        self.results = results_root().resolve()
        self.workers = workers
        self.command = [*compose_command(), "-p", PROJECT_NAME, "-f", str(COMPOSE_FILE)]
        self.env = {
            **os.environ,
            envvars.IMAGE: image,
            "HOST_UID": str(os.getuid()),
            "HOST_GID": str(os.getgid()),
            "PROJECT_DIR": str(PROJECT_DIR),
            envvars.RESULTS_DIR: str(self.results),
            envvars.RAY_AUTH_TOKEN: secrets.token_hex(16),
            "HEAD_SLOTS": str(head_slots),
            "WORKER_SLOTS": str(worker_slots),
            "WORKER_CPUS": f"{worker_cpus(workers, cpus):g}",
            "JOIN_TIMEOUT_S": str(JOIN_TIMEOUT_S),
            envvars.HEAD_RUN: str(run) if run else "",
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
            raise UserError(f"a compose cluster ({PROJECT_NAME}) is already up: `procgen-rl cluster down` first")
        self.results.mkdir(parents=True, exist_ok=True)  # by the host user, before Docker would (as root)
        try:
            self.quietly("up", "--detach", "--scale", f"ray-worker={self.workers}")
        except BaseException:  # failed or stopped half-way: take down what started
            self.compose("down", "--timeout", "0", check=False, capture_output=True)
            raise

    def down(self, timeout_s: int = 10) -> None:
        self.quietly("down", "--timeout", str(timeout_s))

    def run_driver(self) -> int:
        """Follow every node's log until the head (and its training) exits; its exit code.

        The first Ctrl-C / SIGTERM asks the head to stop gracefully (it checkpoints; while it
        starts, it stops at once, and so does this launcher); a second one removes the
        containers and exits at once.
        """
        head = self.container("ray-head")
        logs = subprocess.Popen([*self.command, "logs", "--follow", "--no-color"], env=self.env)

        def stop_head(name: str) -> None:
            print(f"\n{name}: stopping the training after this iteration (again to stop at once)", flush=True)
            subprocess.run(["docker", "kill", "--signal", "TERM", head], capture_output=True)

        try:
            with TwoStageStop(stop_head, on_second=lambda: self.down(timeout_s=0)) as signals:
                waited = subprocess.run(["docker", "wait", head], capture_output=True, text=True, check=True)
            code = int(waited.stdout.strip())
            if signals.received and code == exit_code(signal.SIGTERM):  # stopped before it trained
                raise Stopped(signal.Signals[signals.received])
            return code
        finally:
            logs.terminate()


def worker_cpus(workers: int, cpus: float | None) -> float:
    """Each worker container's CPU limit: `cpus`, or this machine's usable CPUs shared evenly."""
    if cpus is None:
        return round(usable_cpus() / max(1, workers), 2)
    if cpus <= 0:
        raise UserError(f"--worker-cpus must be > 0, got {cpus:g}")
    return cpus


def cluster_hosts(workers: int, cpus: float) -> tuple[HostSpec, list[HostSpec]]:
    """(the head, the hosts that sample): the workers, each with `cpus` (rounded down, at least 1),
    or the head when there are none. The head has this machine's CPUs; the CPU image sees no GPU."""
    head = HostSpec(HEAD, usable_cpus())
    samplers = [
        HostSpec(f"{WORKER}-{i}", max(1, int(cpus)), kind=f"container limit {cpus:g}") for i in range(1, workers + 1)
    ]
    return head, samplers or [head]


def place(job: Job, options: LaunchOptions) -> Layout:
    """Size the runners to the workers' CPU limits; the head learns."""
    if options.workers < 0:
        raise UserError(f"--workers must be >= 0, got {options.workers}")
    head, samplers = cluster_hosts(options.workers, worker_cpus(options.workers, options.worker_cpus))
    why = f"--workers {options.workers}"
    return place_runners(job.experiment, job.explicit, head, samplers, why, spread=options.workers > 0)


def cluster_slots(layout: Layout, workers: int) -> tuple[int, int]:
    """(head slots, slots per worker): the runners of the busiest worker on each, or all on the head
    when there are no workers."""
    if workers == 0:
        return max(1, layout.num_env_runners), 0
    return 0, max(layout.env_runners)


def launch(job: Job, options: LaunchOptions, layout: Layout) -> Outcome:
    """Train on a fresh cluster: up, the head trains the run directory, down."""
    head_slots, worker_slots = cluster_slots(layout, options.workers)
    check_docker(options.image)
    job.local_run.write_config(job.experiment)
    cluster = Cluster(
        options.image,
        options.workers,
        worker_slots,
        head_slots,
        run=job.local_run.path.resolve(),
        cpus=options.worker_cpus,
    )
    cluster.up()
    try:
        print(
            f"compose cluster: ray-head + {options.workers} ray-worker container(s); "
            f"{job.experiment.resources.num_env_runners} env runner(s)",
            flush=True,
        )
        code = cluster.run_driver()
    finally:
        cluster.down()
    if code:
        raise UserError(
            f"training on the compose cluster ended with exit code {code} (log above); "
            f"`procgen-rl train --resume {job.local_run.path} --backend compose` continues it "
            "from its last checkpoint"
        )
    return Outcome.of(job.local_run)
