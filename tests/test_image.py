"""The image, run as SageMaker runs it: /opt/ml/{input,output,model,checkpoints} mounted, `train`.

Needs a Docker engine and the CPU image (`make image-cpu`); .ci/run provides both. Outside CI
these tests skip, saying why; under CI=true a missing engine or image is a failure.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IMAGE, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("require_docker")]


def sagemaker_tree(root: Path, hyperparameters: dict, hosts=("algo-1",), **resources) -> Path:
    """An /opt/ml tree as SageMaker lays it out; values JSON-encoded as the SDK writes them.
    hosts[0] is this host; `resources` adds resourceconfig.json keys (instance groups)."""
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: json.dumps(v) for k, v in hyperparameters.items()}))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": hosts[0], "hosts": list(hosts), **resources})
    )
    (config / "inputdataconfig.json").write_text("{}")  # no data channels
    return root


SAGEMAKER_MOUNTS = ("input", "output", "model", "checkpoints")  # /opt/ml/code stays the image's


def sagemaker_run_args(opt_ml: Path, host: str = "algo-1") -> list[str]:
    """`docker run` options as SageMaker's: each /opt/ml subdirectory mounted, not /opt/ml."""
    args = ["--shm-size=1g", "--hostname", host]  # the toolkit waits until every host resolves
    for name in SAGEMAKER_MOUNTS:
        (opt_ml / name).mkdir(exist_ok=True)
        args += ["-v", f"{opt_ml / name}:/opt/ml/{name}"]
    return args


def run_image(opt_ml: Path, *command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "run", "--rm", *sagemaker_run_args(opt_ml), IMAGE, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metric_lines(text: str) -> list[dict[str, float]]:
    from procgen_rl.reporting import parse_metric_line

    return [parse_metric_line(line[line.index("[metrics]") :]) for line in text.splitlines() if "[metrics]" in line]


@pytest.fixture(scope="module")
def trained_tree(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    opt_ml = sagemaker_tree(tmp_path_factory.mktemp("opt_ml"), {"experiment": "experiments/smoke.yaml"})
    result = run_image(opt_ml, "train")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return opt_ml, result


def test_train_fills_model_checkpoints_and_output(trained_tree):
    import torch

    opt_ml, result = trained_tree
    assert [m["iteration"] for m in metric_lines(result.stdout)] == [1, 2]
    model = opt_ml / "model"
    assert (model / "config.yaml").is_file() and (model / "policy.pt2").is_file()
    assert [p.name for p in (model / "checkpoints").iterdir()] == ["checkpoint_000002"]
    assert sorted(p.name for p in (opt_ml / "checkpoints").iterdir()) == ["checkpoint_000001", "checkpoint_000002"]
    run = opt_ml / "output" / "data" / "run"
    assert (run / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
    assert json.loads((run / "steps_by_host.json").read_text()).keys() == {"algo-1"}
    assert (opt_ml / "output" / "success").exists() and not (opt_ml / "output" / "failure").exists()
    assert not list((opt_ml / "output").rglob(".lock"))  # output.tar.gz carries no lock file
    policy = torch.export.load(str(model / "policy.pt2")).module()  # portable: torch alone loads it
    for batch in (1, 7):
        assert policy(torch.zeros((batch, 3, 64, 64), dtype=torch.uint8)).shape == (batch, 15)


def test_model_dir_is_a_run_that_rollout_reads(trained_tree):
    opt_ml, _ = trained_tree
    result = run_cli(
        "rollout", str(opt_ml / "model"), "--episodes", "1", "--no-video", "--out", str(opt_ml.parent / "rollout")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generalization gap" in result.stdout


def test_interrupted_job_resumes_with_the_step_counter(tmp_path):
    """A spot interruption: `docker stop` mid-run, then the same job again on the same checkpoints."""
    opt_ml = sagemaker_tree(
        tmp_path, {"experiment": "experiments/smoke.yaml", "stop.timesteps_total": 100000, "checkpoint.frequency": 0}
    )  # only the stop writes a checkpoint
    name = f"procgen-rl-test-{tmp_path.name}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, *sagemaker_run_args(opt_ml), IMAGE, "train"],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.time() + 300
        logs = ""
        while "iteration=2 " not in logs and time.time() < deadline:
            time.sleep(2)
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
        subprocess.run(["docker", "stop", "-t", "120", name], check=True, capture_output=True)  # SageMaker's grace
        first = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
        exit_code = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", name], capture_output=True, text=True
        ).stdout.strip()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert "SIGTERM: finishing this iteration" in first and exit_code == "0", first[-3000:]
    stopped_at = metric_lines(first)[-1]["timesteps_total"]
    (checkpoint,) = (opt_ml / "checkpoints").glob("checkpoint_0*[0-9]")
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    assert saved["timesteps_total"] == stopped_at  # the stop's own checkpoint, nothing lost
    sagemaker_tree(
        opt_ml, {"experiment": "experiments/smoke.yaml", "stop.timesteps_total": saved["timesteps_total"] + 1000}
    )
    result = run_image(opt_ml, "train")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"resuming from /opt/ml/checkpoints/checkpoint_{saved['iteration']:06d}" in result.stdout
    lines = metric_lines(result.stdout)
    assert lines[0]["iteration"] == saved["iteration"] + 1
    assert lines[0]["timesteps_total"] > saved["timesteps_total"]


@pytest.mark.parametrize(
    "hyperparameters, reason",
    [
        ({"env_config.env_name": "pong"}, "hyperparameter env_config.env_name: unknown game 'pong'"),
        ({"algorithm.num_envs": "lots"}, "hyperparameter algorithm.num_envs: expected an integer, got 'lots'"),
        ({"env_config.colour": "red"}, "unknown key 'env_config.colour'"),
        ({"experiment": "experiments/missing.yaml"}, "experiment file not found: experiments/missing.yaml"),
    ],
)
def test_bad_hyperparameters_fail_with_the_reason_in_the_failure_file(tmp_path, hyperparameters, reason):
    opt_ml = sagemaker_tree(tmp_path, hyperparameters)
    result = run_image(opt_ml, "train", timeout=180)
    assert result.returncode != 0
    assert reason in (opt_ml / "output" / "failure").read_text()
    assert not list((opt_ml / "checkpoints").iterdir())


def test_sagemaker_local_mode_two_hosts_both_sample(tmp_path, repo, monkeypatch):
    from procgen_rl.config import experiment_to_dict, load_experiment
    from procgen_rl.launchers.sagemaker_local import local_resources
    from procgen_rl.launchers.sagemaker_sdk import resolved_in_job

    run_dir = tmp_path / "job"
    overrides = ["--set", "algorithm.learning_rate=0.001", "--set", "env_config.env_name=starpilot"]
    result = run_cli("train", "experiments/smoke.yaml", *overrides, "--backend", "sagemaker", "--instances", "2",
                     "--run-dir", str(run_dir), "--image", IMAGE, timeout=900)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    run = run_dir / "output" / "data" / "run"
    steps = json.loads((run / "steps_by_host.json").read_text())
    assert len(steps) == 2 and all(count > 0 for count in steps.values()), steps
    assert sorted(h.split("-")[0] + "-" + h.split("-")[1] for h in steps) == ["algo-1", "algo-2"]
    assert (run_dir / "model" / "policy.pt2").is_file()
    # The job's head resolved its hyperparameters to the experiment the host resolved and checked.
    monkeypatch.chdir(repo)
    host_view, _ = resolved_in_job("experiments/smoke.yaml", {"algorithm.learning_rate": 0.001,
                                   "env_config.env_name": "starpilot"}, local_resources(2))  # fmt: skip
    assert experiment_to_dict(load_experiment(run / "config.yaml")) == experiment_to_dict(host_view)
    assert host_view.resources.num_env_runners == 2 and host_view.env_config.env_name == "starpilot"


def test_sagemaker_local_without_docker_engine_is_one_line():
    result = run_cli(
        "train",
        "experiments/smoke.yaml",
        "--backend",
        "sagemaker",
        timeout=120,
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: no Docker engine answers")


def test_heterogeneous_job_heads_on_the_gpu_group(tmp_path):
    """`cloud train --gpu-instances 1 --cpu-instances 1` on two hosts, resourceconfig.json as SageMaker
    writes it for instance groups: the Ray head is the GPU group's host (algo-2, not the first
    host), the CPU group's host joins it, both sample. (The CPU image: the head is chosen by the
    instance type named in resourceconfig.json, not by a GPU being present.)"""
    groups = [
        {"instance_group_name": "rollout", "instance_type": "ml.c5.xlarge", "hosts": ["algo-1"]},
        {"instance_group_name": "learner", "instance_type": "ml.g4dn.xlarge", "hosts": ["algo-2"]},
    ]
    network, token = f"procgen-rl-test-{tmp_path.name}", secrets.token_hex(16)
    subprocess.run(["docker", "network", "create", network], check=True, capture_output=True)
    containers = {host: f"{network}-{host}" for host in ("algo-1", "algo-2")}
    try:
        for host, group in (("algo-1", groups[0]), ("algo-2", groups[1])):
            other = "algo-2" if host == "algo-1" else "algo-1"
            opt_ml = sagemaker_tree(
                tmp_path / host,
                {"experiment": "experiments/smoke.yaml"},
                hosts=(host, other),
                current_group_name=group["instance_group_name"],
                current_instance_type=group["instance_type"],
                instance_groups=groups,
                network_interface_name="eth0",
            )
            subprocess.run(
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    containers[host],
                    "--network",
                    network,
                    "--network-alias",
                    host,
                    "-e",
                    f"RAY_AUTH_TOKEN={token}",
                    *sagemaker_run_args(opt_ml, host),
                    IMAGE,
                    "train",
                ],
                check=True,
                capture_output=True,
            )
        exits = {
            host: subprocess.run(["docker", "wait", name], capture_output=True, text=True, timeout=600).stdout.strip()
            for host, name in containers.items()
        }
        logs = {
            host: subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
            for host, name in containers.items()
        }
    finally:
        for name in containers.values():
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "network", "rm", network], capture_output=True)
    assert exits == {"algo-1": "0", "algo-2": "0"}, logs
    assert "host algo-2 of algo-1, algo-2; head algo-2" in logs["algo-2"]
    assert "joined the Ray cluster at algo-2" in logs["algo-1"]
    steps = json.loads((tmp_path / "algo-2" / "output" / "data" / "run" / "steps_by_host.json").read_text())
    assert sorted(steps) == ["algo-1", "algo-2"] and all(count > 0 for count in steps.values()), steps
    assert (tmp_path / "algo-2" / "model" / "policy.pt2").is_file()
    assert not list((tmp_path / "algo-1" / "model").iterdir())  # only the head exports the model
