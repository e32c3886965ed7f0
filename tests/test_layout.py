"""The automatic layout: made-up hosts, cgroup quotas, explicit settings, `procgen-rl plan`. No Ray."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, assert_one_line_error, run_cli
from procgen_rl import cli, layout
from procgen_rl.config import read_experiment
from procgen_rl.errors import ConfigError
from procgen_rl.instance_types import INSTANCE_TYPES
from procgen_rl.layout import Fixed, HostSpec, choose, place

PPO = "experiments/ppo-8m.yaml"


def host(cpus: int, gpus: int = 0, memory: float = 16.0, name: str = "host") -> HostSpec:
    return HostSpec(name, cpus, gpus, memory if gpus else 0.0)


@pytest.mark.parametrize("gpus", [0, 1, 4, 8])
@pytest.mark.parametrize("cpus", [1, 2, 8, 16, 96])
def test_every_host_gets_a_layout_that_fits_it(cpus, gpus):
    spec = host(cpus, gpus)
    chosen = choose(64, spec, [spec])
    assert chosen.num_env_runners * chosen.envs_per_env_runner == 64  # the total stays: the same learning
    assert 1 <= chosen.num_env_runners <= cpus
    assert chosen.num_env_runners * chosen.cpus_per_env_runner <= cpus
    assert chosen.num_env_runners * chosen.gpus_per_env_runner <= gpus
    assert (chosen.gpus_per_env_runner > 0) == (gpus > 0) and not chosen.infer_on_host_gpu
    assert chosen.learner_device == ("auto" if gpus else "cpu") and chosen.learner_threads == cpus


@pytest.mark.parametrize(
    "spec, runners, envs, threads, share",
    [
        (host(1), 1, 64, 1, 0.0),
        (host(2), 2, 32, 1, 0.0),  # ppo-8m's hand-set layout on a 2-core laptop
        (host(8), 8, 8, 1, 0.0),
        (host(16), 16, 4, 1, 0.0),
        (host(96), 16, 4, 6, 0.0),  # no narrower than 4 envs: the spare CPUs become threads
        (host(8, 1), 4, 16, 2, 0.25),  # ml.p3.2xlarge: the fast GPU layout, 4 runners x 16 envs
        (host(16, 1), 4, 16, 4, 0.25),
        (host(48, 4), 4, 16, 12, 1.0),  # one GPU each
        (host(96, 8), 4, 16, 24, 1.0),
        (host(2, 1), 2, 32, 1, 0.5),  # fewer CPUs than runners per GPU: a half each
    ],
)
def test_what_auto_picks(spec, runners, envs, threads, share):
    chosen = choose(64, spec, [spec])
    assert (chosen.num_env_runners, chosen.envs_per_env_runner, chosen.cpus_per_env_runner) == (runners, envs, threads)
    assert chosen.gpus_per_env_runner == share


def test_a_gpu_short_of_memory_leaves_inference_on_the_cpu():
    small = host(8, 1, memory=4.0)  # the learner keeps 4 GiB of it
    chosen = choose(64, small, [small])
    assert chosen.gpus_per_env_runner == 0 and not chosen.infer_on_host_gpu
    assert (chosen.num_env_runners, chosen.learner_device) == (8, "auto")
    other = host(8, 2, memory=6.0)  # the second GPU holds 4 runners, the learner's 2
    assert layout.gpu_room(other, learns=True) == 6 and layout.gpu_room(other, learns=False) == 8


def test_gpu_and_cpu_hosts_sample_together_on_their_own_devices():
    gpu, cpus = host(4, 1, name="algo-1"), [host(16, name=f"algo-{i}") for i in (2, 3, 4)]
    chosen = choose(64, gpu, [gpu, *cpus], why="4 hosts")
    assert chosen.infer_on_host_gpu and chosen.gpus_per_env_runner == 0  # a Ray share would keep runners off CPU hosts
    assert all(chosen.env_runners) and chosen.num_env_runners * chosen.envs_per_env_runner == 64
    assert chosen.runners_on("algo-2") > chosen.runners_on("algo-1")  # the CPU hosts have more room
    for spec, n in zip(chosen.samplers, chosen.env_runners, strict=True):
        assert n * chosen.cpus_per_env_runner <= spec.cpus
    assert chosen.learner_device == "auto"  # the GPU, where the run sees one


def test_a_learner_of_its_own_samples_nothing():
    head, workers = host(8, name="ray-head"), [host(1, name=f"ray-worker-{i}") for i in (1, 2)]
    chosen = choose(64, head, workers)
    assert chosen.env_runners == (1, 1) and chosen.runners_on("ray-head") == 0
    assert chosen.learner_threads == 8 and chosen.hosts()[0] == "ray-head (8 CPUs): learner"


@pytest.mark.parametrize(
    "cpu_max, expected",
    [("max 100000", None), ("150000 100000", 1), ("50000 100000", 1), ("400000 100000", 4), ("", None)],
)
def test_a_cgroup_cpu_quota_caps_the_usable_cpus(tmp_path, monkeypatch, cpu_max, expected):
    affinity = set(range(16))
    monkeypatch.setattr(layout.os, "sched_getaffinity", lambda pid: affinity)
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(layout, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    assert layout.usable_cpus() == (expected or 16)


def test_a_container_limited_to_one_cpu_gets_one_runner(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # docker run --cpus 1
    monkeypatch.setattr(layout, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.setattr(layout, "visible_gpus", lambda: (0, 0.0))
    experiment, explicit = read_experiment(PPO)
    chosen = layout.place_on_this_machine(experiment, explicit)
    assert (chosen.num_env_runners, chosen.learner_threads) == (1, 1)
    assert experiment.resources.num_env_runners == 1 and experiment.num_envs_per_env_runner == 64


def test_explicit_settings_win_over_auto(tmp_path):
    sixteen = host(16)
    experiment, explicit = read_experiment(PPO, {"resources.num_env_runners": 4})
    chosen = place(experiment, explicit, sixteen, [sixteen], "this machine")
    assert (chosen.num_env_runners, chosen.cpus_per_env_runner) == (4, 4)  # the rest still follows the host
    assert experiment.num_envs_per_env_runner == 16
    # A key in the experiment file counts as set, too.
    mine = tmp_path / "mine.yaml"
    mine.write_text((REPO / PPO).read_text() + "resources: {num_cpus_per_env_runner: 2, learner_threads: 3}\n")
    experiment, explicit = read_experiment(mine)
    chosen = place(experiment, explicit, sixteen, [sixteen], "this machine")
    assert (chosen.num_env_runners, chosen.cpus_per_env_runner, chosen.learner_threads) == (8, 2, 3)
    # RLlib's own env_runners call is applied last, so its GPU share is kept too.
    gpu = host(8, 1)
    experiment, explicit = read_experiment(PPO, {"algorithm.rllib": {"env_runners": {"num_gpus_per_env_runner": 0.5}}})
    chosen = place(experiment, explicit, gpu, [gpu], "this machine")
    assert (chosen.gpus_per_env_runner, chosen.num_env_runners) == (0.5, 2)


def test_manual_keeps_the_section_as_written():
    experiment, explicit = read_experiment(PPO, {"resources.layout": "manual", "resources.num_env_runners": 2})
    chosen = place(experiment, explicit, host(16, 1), [host(16, 1)], "this machine")
    resources = experiment.resources
    assert (resources.num_env_runners, resources.num_cpus_per_env_runner, resources.num_gpus_per_env_runner) == (
        2,
        1,
        0.0,
    )
    assert (resources.learner_device, resources.learner_threads) == ("auto", 0) and chosen.mode == "manual"
    assert chosen.describe().startswith("layout manual: 2 env runners x 32 envs")


def test_a_resumed_run_keeps_its_layout(tmp_path):
    """Every key of a run's config.yaml counts as set: the layout a run started with stays."""
    from procgen_rl.config import save_experiment

    experiment, explicit = read_experiment(PPO)
    place(experiment, explicit, host(16), [host(16)], "this machine")
    save_experiment(experiment, tmp_path / "config.yaml")
    resumed, explicit = read_experiment(tmp_path / "config.yaml")
    chosen = place(resumed, explicit, host(32), [host(32)], "this machine")
    assert (chosen.num_env_runners, chosen.learner_threads) == (16, 16)


@pytest.mark.parametrize(
    "fixed, message",
    [
        (Fixed(num_env_runners=4), r"this machine: 4 env runners x 1 CPU need 4 CPUs on host \(2 CPUs\)"),
        (Fixed(num_gpus_per_env_runner=0.5), r"no room for an env runner on host \(2 CPUs\)"),
        (Fixed(num_env_runners=1, num_gpus_per_env_runner=0.5), r"1 env runner x 0.5 GPU need 0.5 GPUs on host"),
    ],
)
def test_a_host_too_small_for_the_settings_is_one_line(fixed, message):
    with pytest.raises(ConfigError, match=message):
        choose(64, host(2), [host(2)], fixed)


def test_hosts_that_cannot_split_the_envs_are_one_line():
    hosts = [host(1, name=f"algo-{i}") for i in (1, 2, 3)]
    with pytest.raises(ConfigError, match=r"^3 hosts: no env runner count from 3 .* to 3 .*num_envs=8 evenly"):
        choose(8, hosts[0], hosts, why="3 hosts")
    wider = [host(4, name=f"algo-{i}") for i in (1, 2, 3)]  # room for 4 runners of 2 envs: narrower, but all sample
    assert choose(8, wider[0], wider).env_runners == (2, 1, 1)


def plan(capsys, *args: str) -> str:
    assert cli.main(["plan", *args]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("instance_type", sorted(INSTANCE_TYPES))
def test_plan_for_every_listed_instance_type(capsys, instance_type):
    out = plan(capsys, PPO, "--instance-type", instance_type)
    kind = INSTANCE_TYPES[instance_type]
    assert out.startswith(f"ppo-8m on 1 x {instance_type}:\nlayout auto: ")
    assert f"algo-1 ({instance_type}: {kind.vcpus} CPUs" in out
    runners, envs = map(int, re.search(r"(\d+) env runners? x (\d+) envs", out).groups())
    assert runners * envs == 64
    assert ("inference on a GPU" in out) == bool(kind.gpus)
    learner = "the GPU (auto: where the run sees one)" if kind.gpus else "cpu"
    assert f"learner on {learner} with {kind.vcpus} torch threads" in out


def test_plan_of_a_heterogeneous_job_and_of_this_machine(capsys):
    out = plan(capsys, PPO, "--gpu-instances", "1", "--cpu-instances", "2", "--cpu-instance-type", "ml.c5.2xlarge")
    assert out.startswith("ppo-8m on 1 x ml.g4dn.xlarge + 2 x ml.c5.2xlarge:\n")
    assert "inference on the GPU of hosts that have one, else the CPU" in out
    assert "algo-1 (ml.g4dn.xlarge: 4 CPUs, 1 GPU of 16 GiB): learner," in out
    here = plan(capsys, PPO, "--set", "resources.num_env_runners=1")
    assert here.startswith("ppo-8m on this machine:\nlayout auto: 1 env runner x 64 envs")


def test_a_host_too_small_stops_train_before_anything_starts(tmp_path):
    """Through the real CLI: one error line, no run directory, no Ray, no Docker."""
    runners = layout.usable_cpus() + 1
    result = run_cli(
        "train",
        "experiments/smoke.yaml",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        f"algorithm.num_envs={runners}",
        "--set",
        "algorithm.num_minibatches=1",
        "--set",
        f"resources.num_env_runners={runners}",
        timeout=120,
    )
    assert_one_line_error(result, f"this machine: {runners} env runners x 1 CPU need {runners} CPUs")
    assert not (tmp_path / "run").exists()
    result = run_cli(
        "train", "experiments/smoke.yaml", "--backend", "compose", "--workers", "3", "--worker-cpus", "1", timeout=120
    )
    assert_one_line_error(result, "--workers 3: no env runner count from 3 (one per host) to 3", "num_envs=8")


def test_the_docs_table_is_what_plan_prints(capsys):
    table = plan(capsys, PPO, "--all-instance-types").strip()
    docs = (REPO / "docs" / "layout.md").read_text()
    block = re.search(r"<!-- plan:instance-types -->\n(.*?)\n<!-- /plan:instance-types -->", docs, re.S)
    assert block and block.group(1).strip() == table, (
        "docs/layout.md is stale: paste the output of the command above it"
    )


def test_plan_of_an_instance_type_missing_from_the_table_is_one_line(capsys):
    assert cli.main(["plan", PPO, "--instance-type", "ml.x9.large"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: instance type 'ml.x9.large' is not in procgen_rl/instance_types.py"
    )
