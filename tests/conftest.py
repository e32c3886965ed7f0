"""Shared helpers: run the real CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from procgen_rl import __version__
from procgen_rl.docker_engine import check_docker
from procgen_rl.errors import UserError

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("PROCGEN_RL_IMAGE", f"procgen-rl:{__version__}-cpu")
CLI = [sys.executable, "-m", "procgen_rl.cli"]


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def repo() -> Path:
    return REPO


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
