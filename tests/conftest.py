"""Shared helpers: run the real CLI in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from procgen_rl import __version__
from procgen_rl.errors import UserError
from procgen_rl.launchers.docker_engine import check_docker

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("PROCGEN_RL_IMAGE", f"procgen-rl:{__version__}-cpu")
CLI = [sys.executable, "-m", "procgen_rl.cli"]


def callbacks_env() -> dict[str, str]:
    """The environment that lets a run import the callbacks defined in tests/ (`callbacks=[module:Class]`)."""
    return {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def built_learner(experiment):
    """The experiment's learner, built in this process without Ray, for tests of its optimizer and losses."""
    from procgen_rl.envs import ProcgenVectorEnv
    from procgen_rl.trainer import build_algorithm_config

    spaces = ProcgenVectorEnv(experiment.env_config, num_envs=1)
    return build_algorithm_config(experiment).build_learner(
        spaces={"default_policy": (spaces.single_observation_space, spaces.single_action_space)}
    )


def assert_one_line_error(result, *fragments, announced: bool = False):
    """The CLI failed in one `error:` line before Ray started; unless `announced`, before it
    named a run it would train, so that nothing about the run was said and then taken back."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Ray" not in result.stdout + result.stderr  # failed before Ray started
    if not announced:
        assert not [line for line in result.stdout.splitlines() if line.startswith(("training ", "resuming "))]


@pytest.fixture
def repo() -> Path:
    return REPO


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real small filesystem at `path`, to be full or read-only as a user's disk can be.
    Mounting needs root (CI runs as root): skip, saying so, without it."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(path: Path) -> None:
    """Write zeros into `path`/fill until its filesystem is full."""
    with open(path / "fill", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass


@pytest.fixture(scope="session")
def require_docker() -> None:
    """Skip without a Docker engine and the CPU image, saying why; under CI=true, fail instead."""
    try:
        check_docker(IMAGE)  # the launchers' own check: engine answers, image exists
        return
    except UserError as err:
        reason = str(err)
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Docker tests: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_scalar_tags(logdir: Path, expected: str, timeout: float = 90) -> str:
    """A real TensorBoard server on `logdir` (loopback): its scalar tags, as JSON text, once
    `expected` is among them or `timeout` passed."""
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "tensorboard"),
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, tags = time.time() + timeout, "{}"
        while time.time() < deadline and expected not in tags:
            time.sleep(1)
            try:
                url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
                tags = json.dumps(json.loads(urllib.request.urlopen(url, timeout=5).read()))
            except OSError:
                continue
        return tags
    finally:
        server.terminate()
        server.wait(30)
