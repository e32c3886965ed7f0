"""Bad input through the real CLI: one `error:` line, exit 2, before Ray starts, nothing lost."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import assert_one_line_error, fill, run_cli, tmpfs

PPO = "experiments/ppo-8m.yaml"


@pytest.mark.parametrize(
    "args, fragments",
    [
        (
            ["train", PPO, "--set", "env_config.env_name=pong"],
            ["--set env_config.env_name: unknown game 'pong'", "coinrun"],
        ),
        (["train", PPO, "--set", "env_config.levels=3"], ["unknown key 'env_config.levels'", "num_levels"]),
        (
            ["train", PPO, "--set", "algorithm.num_envs=lots"],
            ["--set algorithm.num_envs: expected an integer, got 'lots'"],
        ),
        (
            ["train", PPO, "--set", "model.custom_model=resnet"],
            ["model.custom_model: unknown model 'resnet'", "impala_cnn"],
        ),
        (
            ["train", PPO, "--set", "model.custom_model_config={depths: abc}"],
            ["model.custom_model_config: ImpalaCNN fails to build or sample with {'depths': 'abc'}: TypeError"],
        ),
        (
            ["train", PPO, "--set", "model.custom_model_config.precision=fp16"],
            [
                "model.custom_model_config: ImpalaCNN fails to build or sample",
                "precision 'fp16' is not one of fp32, bf16",
            ],
        ),
        (
            ["train", PPO, "--backend", "compose", "--set", "model.custom_model_config={hidden: -1}"],
            ["model.custom_model_config: ImpalaCNN fails to build or sample", "negative dimension"],
        ),
        (
            ["train", PPO, "--set", "model.custom_model=procgen_rl.models.impala_cnn:ResidualBlock"],
            ["model.custom_model:", "ResidualBlock'> is not an RLlib TorchRLModule subclass"],
        ),
        (
            ["train", PPO, "--set", "algorithm.name=DQNX"],
            ["algorithm.name: unknown algorithm 'DQNX'", "PPO, APPO, IMPALA"],
        ),
        (
            ["train", "experiments/nope.yaml"],
            ["experiment file not found: experiments/nope.yaml", "experiments/ppo-8m.yaml"],
        ),
        (["train"], ["give an EXPERIMENT file"]),
        (["rollout", "results/does-not-exist"], ["results/does-not-exist: no such run or checkpoint directory"]),
    ],
)
def test_bad_input_fails_fast_with_one_line(args, fragments):
    assert_one_line_error(run_cli(*args, timeout=120), *fragments)


USER_MODELS = """
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from procgen_rl.models.impala_cnn import ImpalaCNN


class NoSampledValues(ImpalaCNN):
    def _forward_exploration(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self.net(batch[Columns.OBS])[0]}


class NoTargets(TorchRLModule, ValueFunctionAPI):
    pass


class Recurrent(ImpalaCNN):
    def get_initial_state(self):
        return {"h": torch.zeros(16)}
"""


@pytest.mark.parametrize(
    "experiment, model, fragments",
    [
        (
            PPO,
            "NoSampledValues",
            ["model.custom_model: NoSampledValues._forward_exploration must also return Columns.VF_PREDS"],
        ),
        (
            "experiments/appo-8m.yaml",
            "NoTargets",
            ["model.custom_model: NoTargets must implement TargetNetworkAPI for APPO"],
        ),
        (
            PPO,
            "Recurrent",
            [
                "model.custom_model: Recurrent is recurrent (its get_initial_state is not empty); "
                "the env runners feed a model frames only, no state"
            ],
        ),
    ],
)
def test_a_user_model_that_breaks_the_contract_is_one_line(tmp_path, experiment, model, fragments):
    (tmp_path / "user_models.py").write_text(USER_MODELS)
    result = run_cli(
        "train",
        experiment,
        "--set",
        f"model.custom_model=user_models:{model}",
        timeout=120,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert_one_line_error(result, *fragments)


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("algorithm:\n  name: PPO\n  num_envs: [64\n")
    assert_one_line_error(run_cli("train", str(bad), timeout=120), "broken.yaml: line", "malformed YAML")


def test_rollout_of_a_run_without_checkpoints(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    assert_one_line_error(run_cli("rollout", str(tmp_path), timeout=120), "no complete checkpoint")


def make_run_with_corrupt_checkpoint(root):
    """A run directory whose only checkpoint has a trainer state but a damaged policy file."""
    checkpoint = root / "checkpoints" / "checkpoint_000001"
    policy = checkpoint / "learner_group" / "learner" / "rl_module" / "default_policy"
    policy.mkdir(parents=True)
    (policy / "module_state.pkl").write_bytes(b"not a pickle")
    (policy / "class_and_ctor_args.pkl").write_bytes(b"\x80\x04garbage")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"iteration": 1, "timesteps_total": 512}))
    (checkpoint / "rllib_checkpoint.json").write_text("{}")
    (root / "config.yaml").write_text("name: smoke\n")
    return checkpoint


def test_rollout_of_a_corrupt_checkpoint(tmp_path):
    checkpoint = make_run_with_corrupt_checkpoint(tmp_path)
    result = run_cli("rollout", str(checkpoint), timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "cannot load the policy" in result.stderr


def test_resume_from_an_incomplete_checkpoint_fails_before_ray(tmp_path):
    checkpoint = make_run_with_corrupt_checkpoint(tmp_path)
    (checkpoint / "rllib_checkpoint.json").unlink()
    result = run_cli("train", "--resume", str(tmp_path), timeout=120)
    assert_one_line_error(result, "checkpoint_000001: no rllib_checkpoint.json", announced=True)


def test_resume_from_a_corrupt_checkpoint_is_one_line_and_keeps_the_config(tmp_path):
    make_run_with_corrupt_checkpoint(tmp_path)
    config_before = (tmp_path / "config.yaml").read_text()
    result = run_cli(
        "train",
        "--resume",
        str(tmp_path),
        "--set",
        "algorithm.num_envs=8",
        "--set",
        "algorithm.num_steps=64",
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr[-3000:]
    assert "cannot restore" in result.stderr.strip().splitlines()[-1]
    assert (tmp_path / "config.yaml").read_text() == config_before


def test_new_run_into_a_run_with_checkpoints_is_refused_and_keeps_files(tmp_path):
    checkpoint = make_run_with_corrupt_checkpoint(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run_cli("train", "experiments/smoke.yaml", "--run-dir", str(tmp_path), timeout=120)
    assert_one_line_error(result, "already holds checkpoints", f"--resume {tmp_path}")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert checkpoint.joinpath("trainer_state.json").read_text().startswith("{")


def test_resume_with_bad_override_keeps_files(tmp_path):
    make_run_with_corrupt_checkpoint(tmp_path)
    config_before = (tmp_path / "config.yaml").read_text()
    result = run_cli("train", "--resume", str(tmp_path), "--set", "stop.timesteps_total=soon", timeout=120)
    assert_one_line_error(result, "--set stop.timesteps_total: expected an integer, got 'soon'")
    assert (tmp_path / "config.yaml").read_text() == config_before


def test_help_lists_commands():
    result = run_cli("--help", timeout=60)
    assert result.returncode == 0 and "train" in result.stdout and "rollout" in result.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        (
            ["train", PPO, "--set", "algorithm.num_envs=1e9"],
            ["--set algorithm.num_envs: must be in [1, 65536], got 1000000000"],
        ),
        (
            ["train", PPO, "--set", "env_config.start_level=2147483600"],
            ["--set env_config.start_level: start_level + num_levels = 2147483600 + 200 must be at most 2147483647"],
        ),
        (["train", PPO, "--set", "checkpoint.keep=-1"], ["--set checkpoint.keep: must be >= 0, got -1"]),
        (
            ["train", PPO, "--set", "algorithm.max_grad_norm=-0.5"],
            ["--set algorithm.max_grad_norm: must be > 0, got -0.5"],
        ),
        (["train", PPO, "--set", "name=../x"], ["--set name: '../x' is not a safe run name"]),
        (["train", "{tmp}/empty.yaml"], ["{tmp}/empty.yaml: empty (no settings"]),
        (["train", "{tmp}/binary.yaml"], ["{tmp}/binary.yaml: not a text file"]),
    ],
)
def test_out_of_range_settings_and_bad_files_fail_before_ray(tmp_path, args, fragments):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    result = run_cli(
        *(arg.format(tmp=tmp_path) for arg in args), timeout=120, env={"RESULTS_DIR": str(tmp_path / "results")}
    )
    assert_one_line_error(result, *(fragment.format(tmp=tmp_path) for fragment in fragments))
    assert not (tmp_path / "results").exists()


def filesystem_cases(tmp_path):
    """Paths the filesystem refuses, by what is wrong with them."""
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    return tmp_path


@pytest.mark.parametrize(
    "results_dir, fragments",
    [
        ("{tmp}/file/results", ["run directory {tmp}/file/results/smoke-", ": {tmp}/file is not a directory"]),
        ("{tmp}/file", ["run directory {tmp}/file/smoke-", ": {tmp}/file is not a directory"]),
        ("/proc", ["run directory /proc/smoke-", ": cannot create it (no such file or directory)"]),
        ("/proc/self/fd/0", ["run directory /proc/self/fd/0/smoke-"]),
        ("{tmp}/loop-a/results", ["{tmp}/loop-a: too many levels of symbolic links"]),
        ("{tmp}/dangling/results", ["{tmp}/dangling is a symbolic link to nothing"]),
        ("/dev/null", ["run directory /dev/null/smoke-", "/dev/null is not a directory"]),
    ],
)
def test_a_results_dir_that_cannot_hold_runs_is_one_line(tmp_path, results_dir, fragments):
    tmp = filesystem_cases(tmp_path)
    before = sorted(tmp.rglob("*"))
    result = run_cli("train", "experiments/smoke.yaml", env={"RESULTS_DIR": results_dir.format(tmp=tmp)}, timeout=120)
    assert_one_line_error(result, *(f.format(tmp=tmp) for f in fragments), "choose another --run-dir or RESULTS_DIR")
    assert sorted(tmp.rglob("*")) == before


@pytest.mark.parametrize(
    "run_dir, fragments",
    [
        ("{tmp}/file", ["run directory {tmp}/file: it is not a directory"]),
        ("{tmp}/file/run", ["run directory {tmp}/file/run: {tmp}/file is not a directory"]),
        ("{tmp}/loop-a", ["run directory {tmp}/loop-a: too many levels of symbolic links"]),
        ("{tmp}", ["{tmp} holds other files: a new run needs a new or empty --run-dir"]),
    ],
)
def test_a_run_dir_that_cannot_be_one_is_one_line(tmp_path, run_dir, fragments):
    tmp = filesystem_cases(tmp_path)
    before = sorted(tmp.rglob("*"))
    result = run_cli("train", "experiments/smoke.yaml", "--run-dir", run_dir.format(tmp=tmp), timeout=120)
    assert_one_line_error(result, *(f.format(tmp=tmp) for f in fragments))
    assert sorted(tmp.rglob("*")) == before


def test_a_read_only_results_dir_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as read_only:
        result = run_cli(
            "train", "experiments/smoke.yaml", env={"RESULTS_DIR": str(read_only / "results")}, timeout=120
        )
    assert_one_line_error(
        result, f"run directory {read_only}/results/smoke-", "cannot create it (read-only file system)"
    )


def test_a_full_disk_is_found_before_ray_starts(tmp_path):
    with tmpfs(tmp_path / "full", "256k") as full:
        fill(full)
        result = run_cli("train", "experiments/smoke.yaml", "--run-dir", str(full / "run"), timeout=120)
        assert_one_line_error(result, f"run directory {full}/run: cannot write to it (no space left on device)")
        assert [p.name for p in full.iterdir()] == ["fill"]


@pytest.mark.parametrize(
    "out, fragment",
    [
        ("{tmp}/file", "--out {tmp}/file: it is not a directory; choose another --out"),
        ("{tmp}/file/rollout", "--out {tmp}/file/rollout: {tmp}/file is not a directory"),
        ("/proc/rollout", "--out /proc/rollout: cannot create it (no such file or directory)"),
    ],
)
def test_rollout_out_that_cannot_be_written_fails_before_the_episodes(tmp_path, out, fragment):
    tmp = filesystem_cases(tmp_path)
    checkpoint = make_run_with_corrupt_checkpoint(tmp / "run")  # the --out check comes before the policy loads
    result = run_cli("rollout", str(checkpoint), "--out", out.format(tmp=tmp), timeout=120)
    assert_one_line_error(result, fragment.format(tmp=tmp))
    assert (tmp / "file").read_text() == "not a directory\n"


@pytest.mark.parametrize(
    "experiment, fragment",
    [
        ("experiments", "experiments: not a regular file (a directory, device or pipe)"),
        ("/dev/zero", "/dev/zero: not a regular file"),
        ("{tmp}/huge.yaml", "{tmp}/huge.yaml: 2,097,152 bytes, too large for an experiment"),
    ],
)
def test_an_experiment_that_is_not_a_file_is_one_line(tmp_path, experiment, fragment):
    (tmp_path / "huge.yaml").write_text("#" * (2**21 - 1) + "\n")
    result = run_cli("train", experiment.format(tmp=tmp_path), timeout=120)
    assert_one_line_error(result, fragment.format(tmp=tmp_path))


def test_resume_names_a_checkpoint_that_must_be_complete(tmp_path):
    checkpoint = make_run_with_corrupt_checkpoint(tmp_path)
    partial = checkpoint.with_name("checkpoint_000002.partial")
    partial.mkdir()
    result = run_cli("train", "--resume", str(partial), timeout=120)
    assert_one_line_error(result, f"{partial}: not a complete checkpoint")
    (checkpoint / "rllib_checkpoint.json").unlink()
    result = run_cli("train", "--resume", str(checkpoint), timeout=120)
    assert_one_line_error(result, f"{checkpoint}: no rllib_checkpoint.json")


def test_resume_from_an_older_corrupt_checkpoint_puts_the_newer_ones_back(tmp_path):
    older = make_run_with_corrupt_checkpoint(tmp_path)
    newer = older.with_name("checkpoint_000002")
    shutil.copytree(older, newer)
    result = run_cli(
        "train",
        "--resume",
        str(older),
        "--set",
        "algorithm.num_envs=8",
        "--set",
        "algorithm.num_steps=64",
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {older}: cannot restore")
    assert f"the newer checkpoints moved to {tmp_path}/checkpoints/superseded-" in result.stdout
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_000001", "checkpoint_000002"]


def test_resume_of_a_run_another_process_trains_moves_nothing(tmp_path):
    older = make_run_with_corrupt_checkpoint(tmp_path)
    shutil.copytree(older, older.with_name("checkpoint_000002"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom procgen_rl.run_dir import RunDir\n"
            "with RunDir(Path(sys.argv[1])).lock():\n print('locked', flush=True); time.sleep(120)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("train", "--resume", str(older), timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert_one_line_error(result, f"{tmp_path} is being trained by another process")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_000001", "checkpoint_000002"]
