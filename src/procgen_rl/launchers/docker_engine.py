"""The local Docker engine, checked once with one clear line instead of a client's traceback."""

from __future__ import annotations

import subprocess

from procgen_rl.errors import UserError


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def build_command(variant: str) -> str:
    from procgen_rl import __version__

    return f"docker build -f docker/Dockerfile --build-arg VARIANT={variant} -t procgen-rl:{__version__}-{variant} ."


def check_docker(image: str, build: str = build_command("cpu"), hint: str = ", or use --backend native") -> None:
    """An engine answers and holds `image`, or a UserError saying what to do."""
    if not docker_answers():
        raise UserError(f"no Docker engine answers (`docker info` failed): start Docker{hint}")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        raise UserError(f"image {image} not found: build it with `{build}`")
