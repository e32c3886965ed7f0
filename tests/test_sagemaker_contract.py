"""The SageMaker contract, against a temp /opt/ml tree (SAGEMAKER_BASE_DIR): no Docker; the slow tests
run the entry point with real Ray and Procgen."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from procgen_rl import envvars
from procgen_rl.errors import ConfigError
from procgen_rl.runtime import sagemaker


def write_config(base, hyperparameters, resources):
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps(resources))


def job_experiment():
    """The job's experiment and layout, as a host resolves them from /opt/ml."""
    env = sagemaker.read_training_env()
    return sagemaker.job_experiment(env.hyperparameters, env.resources)


@pytest.fixture
def opt_ml(tmp_path, monkeypatch):
    monkeypatch.setenv(envvars.SAGEMAKER_BASE_DIR, str(tmp_path))
    return tmp_path


def test_hyperparameters_override_the_experiment_with_types(opt_ml, repo, monkeypatch):
    monkeypatch.chdir(repo)
    # As the SDK writes them: every value JSON-encoded into a string.
    write_config(
        opt_ml,
        {
            "experiment": '"experiments/ppo-8m.yaml"',
            "env_config.env_name": '"starpilot"',
            "stop.timesteps_total": "1000000",
            "algorithm.normalize_reward": "false",
            "algorithm.learning_rate": "0.0003",
            "sagemaker_program": '"sagemaker_entry.py"',
        },
        {"current_host": "algo-1", "hosts": ["algo-1"]},
    )
    env = sagemaker.read_training_env()
    experiment, _ = sagemaker.job_experiment(env.hyperparameters, env.resources)
    assert experiment.env_config.env_name == "starpilot"
    assert experiment.stop.timesteps_total == 1_000_000
    assert experiment.algorithm.normalize_reward is False and experiment.algorithm.learning_rate == 3e-4
    assert env.is_head and env.checkpoints_path == opt_ml / "checkpoints"


def test_plain_text_hyperparameters_as_the_console_sends_them(opt_ml, repo, monkeypatch):
    monkeypatch.chdir(repo)
    write_config(
        opt_ml,
        {"experiment": "experiments/smoke.yaml", "env_config.env_name": "maze"},
        {"current_host": "algo-1", "hosts": ["algo-1"]},
    )
    experiment, _ = job_experiment()
    assert (experiment.name, experiment.env_config.env_name) == ("smoke", "maze")


@pytest.mark.parametrize(
    "hyperparameters, message",
    [
        ({"env_config.colour": '"red"'}, "hyperparameter env_config.colour: unknown key 'env_config.colour'"),
        ({"algorithm.num_envs": '"lots"'}, "hyperparameter algorithm.num_envs: expected an integer, got 'lots'"),
        ({"experiment": '"experiments/missing.yaml"'}, "experiment file not found: experiments/missing.yaml"),
    ],
)
def test_bad_hyperparameters(opt_ml, repo, monkeypatch, hyperparameters, message):
    monkeypatch.chdir(repo)
    write_config(opt_ml, hyperparameters, {"current_host": "algo-1", "hosts": ["algo-1"]})
    with pytest.raises(ConfigError) as caught:
        job_experiment()
    assert message in str(caught.value)


def test_main_writes_the_failure_file_and_exits_non_zero(opt_ml, repo, monkeypatch):
    monkeypatch.chdir(repo)
    write_config(opt_ml, {"env_config.env_name": '"pong"'}, {"current_host": "algo-1", "hosts": ["algo-1"]})
    assert sagemaker.main() == 2
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason.startswith("error: hyperparameter env_config.env_name: unknown game 'pong'; allowed: bigfish")


def test_head_is_the_first_host_or_the_gpu_group():
    assert sagemaker.head_host({"hosts": ["algo-2", "algo-1"]}) == "algo-1"
    groups = {
        "hosts": ["algo-1", "algo-2", "algo-3"],
        "instance_groups": [
            {"instance_group_name": "rollout", "instance_type": "ml.c5.4xlarge", "hosts": ["algo-1", "algo-2"]},
            {"instance_group_name": "learner", "instance_type": "ml.g4dn.xlarge", "hosts": ["algo-3"]},
        ],
    }
    assert sagemaker.head_host(groups) == "algo-3"


def test_missing_resource_config_is_a_clear_error(opt_ml):
    with pytest.raises(ConfigError, match="resourceconfig.json: unreadable"):
        sagemaker.read_training_env()


@pytest.mark.parametrize("hosts_listed", ["all", "own group"])
def test_heterogeneous_job_counts_every_group_and_heads_on_the_gpu_group(opt_ml, hosts_listed):
    """resourceconfig.json of `cloud train --gpu-instances 1 --cpu-instances 3`, as seen on a CPU host.

    sagemaker-training documents `hosts` as every group's hosts; should a host see only its own
    group's there, the groups still name them all: the head must count four (it waits for that
    many Ray nodes) either way.
    """
    groups = [
        {"instance_group_name": "learner", "instance_type": "ml.g4dn.xlarge", "hosts": ["algo-4"]},
        {"instance_group_name": "rollout", "instance_type": "ml.c5.4xlarge", "hosts": ["algo-1", "algo-2", "algo-3"]},
    ]
    hosts = ["algo-1", "algo-2", "algo-3", "algo-4"] if hosts_listed == "all" else ["algo-1", "algo-2", "algo-3"]
    write_config(
        opt_ml,
        {},
        {
            "current_host": "algo-2",
            "current_group_name": "rollout",
            "current_instance_type": "ml.c5.4xlarge",
            "hosts": hosts,
            "instance_groups": groups,
        },
    )
    env = sagemaker.read_training_env()
    assert env.hosts == ("algo-1", "algo-2", "algo-3", "algo-4")
    assert env.head_host == "algo-4" and not env.is_head


@pytest.mark.parametrize("name", ["smoke.yaml", "smoke", "experiments/smoke.yaml"])
def test_the_experiment_may_be_named_bare_or_by_its_path(opt_ml, repo, monkeypatch, name):
    monkeypatch.chdir(repo)
    write_config(opt_ml, {"experiment": json.dumps(name)}, {"current_host": "algo-1", "hosts": ["algo-1"]})
    experiment, _ = job_experiment()
    assert experiment.name == "smoke"


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "../pyproject.toml",
        "experiments/../pyproject.toml",
        "..",
        "experiments/sub/x.yaml",
        ".hidden.yaml",
    ],
)
def test_the_experiment_is_read_from_experiments_only_and_never_quoted(opt_ml, repo, monkeypatch, name):
    monkeypatch.chdir(repo)
    write_config(opt_ml, {"experiment": json.dumps(name)}, {"current_host": "algo-1", "hosts": ["algo-1"]})
    assert sagemaker.main() == 2
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason.startswith(f"error: hyperparameter experiment: {name!r} is not a file in experiments/")
    assert "root:" not in reason and "setuptools" not in reason  # no content of the file named


def test_values_encoded_twice_lose_both_quotes(opt_ml, repo, monkeypatch):
    monkeypatch.chdir(repo)
    write_config(
        opt_ml,
        {
            "experiment": json.dumps(json.dumps("smoke.yaml")),
            "env_config.env_name": json.dumps(json.dumps("starpilot")),
        },
        {"current_host": "algo-1", "hosts": ["algo-1"]},
    )
    experiment, _ = job_experiment()
    assert experiment.env_config.env_name == "starpilot"


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("hyperparameters.json", "[1, 2]", "hyperparameters.json: expected a JSON object, got list"),
        ("hyperparameters.json", "{not json", "hyperparameters.json: not JSON"),
        (
            "resourceconfig.json",
            '{"hosts": ["algo-1"]}',
            "resourceconfig.json: current_host None is not one of its hosts",
        ),
        ("resourceconfig.json", '"algo-1"', "resourceconfig.json: expected a JSON object, got str"),
    ],
)
def test_malformed_sagemaker_files_are_one_line_naming_the_file(opt_ml, file, content, message):
    write_config(opt_ml, {}, {"current_host": "algo-1", "hosts": ["algo-1"]})
    (opt_ml / "input" / "config" / file).write_text(content)
    assert sagemaker.main() == 2
    reason = (opt_ml / "output" / "failure").read_text()
    assert reason.count("\n") == 1 and reason.startswith("error: ") and message in reason, reason


TWO_C5 = {"hosts": ["algo-1", "algo-2"], "current_instance_type": "ml.c5.xlarge"}


def test_several_hosts_share_the_runners_by_the_layout_unless_set(repo, monkeypatch):
    monkeypatch.chdir(repo)
    experiment, layout = sagemaker.job_experiment({"experiment": "smoke.yaml"}, TWO_C5)
    assert (experiment.resources.num_env_runners, experiment.resources.spread_env_runners) == (2, True)
    assert [layout.runners_on(host) for host in ("algo-1", "algo-2")] == [1, 1]  # 8 envs: 4 each at least
    experiment, layout = sagemaker.job_experiment({"experiment": "smoke.yaml", "resources.num_env_runners": 4}, TWO_C5)
    assert experiment.resources.num_env_runners == 4
    assert [layout.runners_on(host) for host in ("algo-1", "algo-2")] == [2, 2]


def test_every_host_plans_the_same_layout_from_the_instance_types(repo, monkeypatch):
    """A heterogeneous job, as the head and as a rollout host read resourceconfig.json: the same
    runners on every host, whatever the host measures; the GPU host learns."""
    monkeypatch.chdir(repo)
    groups = [
        {"instance_group_name": "learner", "instance_type": "ml.g4dn.xlarge", "hosts": ["algo-3"]},
        {"instance_group_name": "rollout", "instance_type": "ml.c5.4xlarge", "hosts": ["algo-1", "algo-2"]},
    ]
    layouts = []
    for host, kind in (("algo-3", "ml.g4dn.xlarge"), ("algo-1", "ml.c5.4xlarge")):
        resources = {"current_host": host, "current_instance_type": kind, "hosts": [host], "instance_groups": groups}
        experiment, layout = sagemaker.job_experiment({"experiment": "ppo-8m.yaml"}, resources)
        layouts.append(layout)
    assert layouts[0] == layouts[1]
    layout = layouts[0]
    assert layout.learner.name == "algo-3" and layout.learner_device == "auto"  # the GPU, where visible
    assert layout.infer_on_host_gpu and layout.gpus_per_env_runner == 0  # runners on the CPU hosts too
    assert experiment.resources.infer_on_host_gpu and experiment.resources.spread_env_runners
    assert all(layout.runners_on(host) for host in ("algo-1", "algo-2", "algo-3"))
    assert layout.num_env_runners * layout.envs_per_env_runner == 64


def test_local_mode_hosts_share_this_machine(repo, monkeypatch):
    monkeypatch.chdir(repo)
    resources = {
        "current_host": "algo-1-abcde",
        "hosts": ["algo-1-abcde", "algo-2-fghij"],
        "current_instance_type": "local",
    }
    _, layout = sagemaker.job_experiment({"experiment": "ppo-8m.yaml"}, resources)
    machine = len(os.sched_getaffinity(0))
    assert all(spec.cpus == max(1, machine // 2) and not spec.gpus for spec in layout.samplers)


def test_an_instance_type_missing_from_the_table_is_one_line(repo, monkeypatch):
    monkeypatch.chdir(repo)
    groups = [
        {"instance_group_name": "learner", "instance_type": "ml.g4dn.xlarge", "hosts": ["algo-1"]},
        {"instance_group_name": "rollout", "instance_type": "ml.c9.huge", "hosts": ["algo-2"]},
    ]
    resources = {
        "current_host": "algo-1",
        "current_instance_type": "ml.g4dn.xlarge",
        "hosts": ["algo-1"],
        "instance_groups": groups,
    }
    with pytest.raises(ConfigError, match=r"instance type 'ml.c9.huge' is not in procgen_rl/instance_types.py"):
        sagemaker.job_experiment({"experiment": "ppo-8m.yaml"}, resources)


def test_a_multi_host_job_without_a_token_names_what_to_pass(opt_ml, repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.delenv(envvars.RAY_AUTH_TOKEN, raising=False)
    write_config(opt_ml, {"experiment": '"smoke.yaml"'}, {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]})
    assert sagemaker.main() == 2
    reason = (opt_ml / "output" / "failure").read_text()
    assert "RAY_AUTH_TOKEN" in reason and "docs/sagemaker-contract.md" in reason and "procgen-rl compose" not in reason


def run_entry_point(base, repo, **popen) -> subprocess.Popen:
    """The image's SageMaker entry point against the /opt/ml tree at `base`, as `train` runs it."""
    return subprocess.Popen(
        [sys.executable, str(repo / "docker" / "sagemaker_entry.py")],
        cwd=repo,
        env={**os.environ, envvars.SAGEMAKER_BASE_DIR: str(base), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


@pytest.mark.slow
def test_a_job_leaves_no_lock_file_in_its_output(tmp_path, repo):
    """SageMaker packs /opt/ml/output/data into output.tar.gz: the run there, without its lock."""
    write_config(tmp_path, {"experiment": '"smoke.yaml"'}, {"current_host": "algo-1", "hosts": ["algo-1"]})
    job = run_entry_point(tmp_path, repo)
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output[-3000:]
    assert (tmp_path / "output" / "data" / "run" / "stopped.json").is_file()
    assert (tmp_path / "model" / sagemaker.POLICY_FILE).is_file()
    assert not list(tmp_path.rglob(".lock"))


@pytest.mark.slow
def test_a_job_stopped_while_ray_starts_exits_quietly_with_143(tmp_path, repo):
    write_config(tmp_path, {"experiment": '"smoke.yaml"'}, {"current_host": "algo-1", "hosts": ["algo-1"]})
    job = run_entry_point(tmp_path, repo)
    lines = []
    for line in job.stdout:
        lines.append(line)
        if line.startswith("starting Ray"):
            break
    time.sleep(1)
    job.send_signal(signal.SIGTERM)
    output, _ = job.communicate(timeout=120)
    output = "".join(lines) + output
    assert job.returncode == 143, output[-3000:]
    assert "Traceback" not in output and "SIGTERM received" not in output, output[-3000:]
    assert not (tmp_path / "output" / "failure").exists()  # stopped, not failed
