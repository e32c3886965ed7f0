"""The compose cluster: a Ray head container and worker containers of the CPU image, for real.

Needs a Docker engine, `docker compose` (or docker-compose) and the CPU image; .ci/run provides
them. Outside CI these tests skip, saying why; under CI=true a missing part is a failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import CLI, IMAGE, REPO, run_cli
from procgen_rl.config import experiment_to_dict, load_experiment, read_experiment
from procgen_rl.launchers import Job, LaunchOptions
from procgen_rl.launchers.compose import PROJECT_NAME, place

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("require_docker")]
SMOKE = "experiments/smoke.yaml"
HEAD = f"{PROJECT_NAME}-ray-head-1"


@pytest.fixture(autouse=True)
def no_cluster_left_behind():
    """Every test starts and ends without a cluster, whatever happened in between."""
    yield
    run_cli("cluster", "down", timeout=120)


def start_training(results: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RESULTS_DIR": str(results)}
    return subprocess.Popen(
        [*CLI, "train", "--backend", "compose", "--image", IMAGE, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_line(process: subprocess.Popen, pattern: str, seen: list[str], timeout: float = 300) -> None:
    """Read the launcher's output until a line matches (the launcher follows every node's log)."""
    deadline = time.time() + timeout
    for line in process.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return
        if time.time() > deadline:
            break
    pytest.fail(f"no line matching {pattern!r}; output:\n{''.join(seen)[-5000:]}")


def finish(process: subprocess.Popen, seen: list[str], timeout: float = 600) -> str:
    out, _ = process.communicate(timeout=timeout)
    return "".join(seen) + out


def only_run(results: Path) -> Path:
    runs = [p for p in results.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_head_and_two_workers_train_and_every_worker_samples(tmp_path):
    result = run_cli(
        "train",
        SMOKE,
        "--backend",
        "compose",
        "--workers",
        "2",
        "--image",
        IMAGE,
        timeout=600,
        env={"RESULTS_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    run = only_run(tmp_path)
    steps = json.loads((run / "steps_by_host.json").read_text())
    assert len(steps) == 2 and "ray-head" not in steps and all(n > 0 for n in steps.values()), steps
    assert json.loads((run / "stopped.json").read_text())["timesteps_total"] == 1024
    # The head trained the experiment the host resolved: one env runner per worker, spread over them.
    experiment, explicit = read_experiment(REPO / SMOKE)
    host_view = Job(experiment, SMOKE, {}, explicit, run=None)
    place(host_view, LaunchOptions(workers=2))
    assert experiment_to_dict(load_experiment(run / "config.yaml")) == experiment_to_dict(host_view.experiment)
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [run, *run.rglob("*")]}
    assert owners == {(os.getuid(), os.getgid())}, owners  # the host user's, not root's
    assert f"Results:     {run}" in result.stdout  # paths the driver prints are valid on the host
    assert (
        subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"name={PROJECT_NAME}-"], capture_output=True, text=True
        ).stdout.strip()
        == ""
    )  # torn down


def test_workers_have_cpu_limits_and_their_runners_follow_them(tmp_path):
    """`--worker-cpus 1`: Docker limits each worker to one CPU, the layout gives each worker one env
    runner of one CPU (the smoke run's 8 envs: 2 runners x 4), each worker's Ray node offers one
    CPU and one slot, both sample, and the run's config.yaml holds the layout."""
    process = start_training(
        tmp_path, SMOKE, "--workers", "2", "--worker-cpus", "1", "--set", "stop.timesteps_total=2048"
    )
    seen: list[str] = []
    wait_for_line(process, r"\[metrics\] iteration=1 ", seen)
    workers = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"name={PROJECT_NAME}-ray-worker"], capture_output=True, text=True
    ).stdout.split()
    limits = [
        subprocess.run(
            ["docker", "inspect", "--format", "{{.HostConfig.NanoCpus}}", worker], capture_output=True, text=True
        ).stdout.strip()
        for worker in workers
    ]
    quota = "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us"  # cgroup v2 or v1
    quotas = [
        subprocess.run(["docker", "exec", worker, "sh", "-c", quota], capture_output=True, text=True).stdout.split()[:1]
        for worker in workers
    ]
    output = finish(process, seen)
    assert process.returncode == 0, output[-5000:]
    assert len(workers) == 2 and limits == ["1000000000"] * 2, limits
    assert quotas == [["100000"]] * 2, quotas  # cgroup v2 cpu.max "100000 100000": one CPU
    assert "layout auto: 2 env runners x 4 envs, 1 CPU and torch thread each, inference on the CPU" in output
    assert "ray-worker-1 (container limit 1: 1 CPU): 1 env runner" in output
    assert output.count("with 1 env runner slot(s)") == 2  # each worker joined with its one slot
    run = only_run(tmp_path)
    resources = yaml.safe_load((run / "config.yaml").read_text())["resources"]
    assert (resources["layout"], resources["num_env_runners"], resources["num_cpus_per_env_runner"]) == ("auto", 2, 1)
    steps = json.loads((run / "steps_by_host.json").read_text())
    assert len(steps) == 2 and "ray-head" not in steps and all(n > 0 for n in steps.values()), steps


def test_cluster_up_publishes_only_loopback_and_takes_an_attached_driver(tmp_path):
    env = {"RESULTS_DIR": str(tmp_path)}
    up = run_cli("cluster", "up", "--workers", "1", "--image", IMAGE, timeout=300, env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    ports = json.loads(
        subprocess.run(
            ["docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}", HEAD],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    bindings = [b for mapping in ports.values() if mapping for b in mapping]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), ports
    assert list(ports) == ["10001/tcp"], ports  # GCS 6379 and everything else stay unpublished
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    for port in ("6379", "10001"):
        exposed = [line for line in listening.splitlines() if re.search(rf"(0\.0\.0\.0|\[::\]|\*):{port}\s", line)]
        assert not exposed, exposed

    run = tmp_path / "attached"
    driver = subprocess.run(
        [
            "docker",
            "exec",
            HEAD,
            "procgen-rl",
            "train",
            str(REPO / SMOKE),
            "--run-dir",
            str(run),
            "--set",
            "resources.num_env_runners=1",
            "--set",
            "resources.spread_env_runners=true",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert driver.returncode == 0, (driver.stdout + driver.stderr)[-5000:]
    steps = json.loads((run / "steps_by_host.json").read_text())
    assert list(steps.values()) == [1024] and "ray-head" not in steps, steps

    logs = run_cli("cluster", "logs", "--no-follow", timeout=60, env=env)
    assert "joined the Ray cluster at ray-head" in logs.stdout + logs.stderr
    assert run_cli("cluster", "down", timeout=120, env=env).returncode == 0
    assert (
        subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"name={PROJECT_NAME}-"], capture_output=True, text=True
        ).stdout.strip()
        == ""
    )


def test_killed_worker_is_reported_and_training_finishes(tmp_path):
    seen: list[str] = []
    process = start_training(tmp_path, SMOKE, "--workers", "2", "--set", "stop.timesteps_total=4096")
    wait_for_line(process, r"\[metrics\] iteration=1 ", seen)
    subprocess.run(["docker", "kill", f"{PROJECT_NAME}-ray-worker-2"], check=True, capture_output=True)
    output = finish(process, seen)
    assert process.returncode == 0, output[-5000:]
    assert "env runners: lost 1; 1 of 2 healthy" in output, output[-5000:]
    assert json.loads((only_run(tmp_path) / "stopped.json").read_text())["timesteps_total"] >= 4096


def test_killed_head_resumes_with_the_step_counter(tmp_path):
    seen: list[str] = []
    process = start_training(
        tmp_path, SMOKE, "--workers", "1", "--resume-interrupted", "--set", "stop.timesteps_total=8192"
    )
    wait_for_line(process, r"\[metrics\] iteration=2 ", seen)
    run = only_run(tmp_path)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "checkpoint_000002").is_dir() and time.time() < deadline:
        time.sleep(0.5)
    subprocess.run(["docker", "kill", HEAD], check=True, capture_output=True)
    output = finish(process, seen)
    assert process.returncode == 2, output[-3000:]
    assert f"`procgen-rl train --resume {run} --backend compose` continues it" in output.splitlines()[-1]

    again = run_cli(
        "train",
        SMOKE,
        "--backend",
        "compose",
        "--workers",
        "1",
        "--image",
        IMAGE,
        "--resume-interrupted",
        "--set",
        "stop.timesteps_total=8192",
        timeout=600,
        env={"RESULTS_DIR": str(tmp_path)},
    )
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    assert f"{run} was interrupted: resuming it" in again.stdout
    resumed_at = re.search(r"resumed \S+checkpoint_(\d+) at iteration (\d+), ([\d,]+) steps", again.stdout)
    assert resumed_at and int(resumed_at[2]) >= 2, again.stdout[-3000:]
    first_iteration = re.search(r"\[metrics\] iteration=(\d+) timesteps_total=(\d+)", again.stdout)
    assert int(first_iteration[1]) == int(resumed_at[2]) + 1
    assert int(first_iteration[2]) == int(resumed_at[3].replace(",", "")) + 512
    assert only_run(tmp_path) == run  # no new run directory
    assert json.loads((run / "stopped.json").read_text())["timesteps_total"] >= 8192


def test_ctrl_c_while_the_head_starts_stops_quietly_and_leaves_no_run(tmp_path):
    process = start_training(tmp_path, SMOKE, "--workers", "1")
    seen: list[str] = []
    wait_for_line(process, r"starting Ray and", seen)  # the head's trainer, before its loop
    process.send_signal(signal.SIGINT)
    output = finish(process, seen, timeout=300)
    assert process.returncode == 130, output[-5000:]
    assert "Traceback" not in output, output[-5000:]
    assert not list(tmp_path.glob("smoke-*"))  # a new run without a checkpoint is removed


def test_worker_without_a_head_fails_in_bounded_time():
    started = time.time()
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-e",
            "RAY_AUTH_TOKEN=x",
            IMAGE,
            "procgen-rl",
            "node",
            "worker",
            "--head",
            "no-such-head",
            "--join-timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: Ray head no-such-head:6379 unreachable for 5 s; is the head running and on this node's network?"
    )
    assert time.time() - started < 60


def test_compose_backend_without_docker_engine_is_one_line():
    result = run_cli(
        "train", SMOKE, "--backend", "compose", timeout=120, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no Docker engine answers (`docker info` failed): start Docker, or use --backend native"
    ]


def test_auto_backend_without_docker_engine_trains_natively_and_says_so(tmp_path):
    result = run_cli(
        "train",
        SMOKE,
        "--backend",
        "auto",
        "--set",
        "stop.timesteps_total=512",
        timeout=600,
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock", "RESULTS_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert result.stdout.splitlines()[0] == "no Docker engine answers (docker info): training natively in this process"
    assert json.loads((only_run(tmp_path) / "stopped.json").read_text())["timesteps_total"] >= 512
