"""Faults while training, through the real CLI: stop signals, a full disk, resuming from an older
checkpoint, nothing left outside the run. Real Ray and Procgen, the smoke experiment.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CLI, REPO, run_cli, tmpfs

pytestmark = pytest.mark.slow
SMOKE = "experiments/smoke.yaml"


class Training:
    """The CLI in a subprocess, its stdout and stderr read together as they come."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.process = subprocess.Popen(
            [*CLI, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.output: list[str] = []

    def wait_for(self, pattern: str) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            self.output.append(line)
            if re.search(pattern, line):
                return
        pytest.fail(f"the run ended before printing {pattern!r}:\n{self.text[-3000:]}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 300) -> int:
        assert self.process.stdout
        self.output += self.process.stdout.readlines()
        return self.process.wait(timeout)

    @property
    def text(self) -> str:
        return "".join(self.output)


def long_run(run: Path) -> Training:
    """A new smoke run that would train far longer than a test waits."""
    return Training("train", SMOKE, "--run-dir", str(run), "--set", "stop.timesteps_total=10000000")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A finished smoke run (two checkpoints) trained with HOME set to an empty directory."""
    root = tmp_path_factory.mktemp("trained")
    home, run = root / "home", root / "run"
    home.mkdir()
    result = run_cli("train", SMOKE, "--run-dir", str(run), env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr[-3000:]
    return run, home


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_a_run_leaves_nothing_in_home_and_no_lock(trained):
    run, home = trained
    assert list(home.iterdir()) == []  # no ~/ray_results/<timestamp>/
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("events.out.tfevents")) == [
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
        "steps_by_host.json",
        "stopped.json",
    ]


def test_a_damaged_latest_checkpoint_names_an_older_one_and_resuming_from_it_works(trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    damaged = run / "checkpoints" / "checkpoint_000002"
    (damaged / "learner_group" / "learner" / "rl_module" / "default_policy" / "module_state.pkl").write_bytes(b"x")
    failed = run_cli("train", "--resume", str(run))
    assert failed.returncode == 2, failed.stderr[-3000:]
    older = run / "checkpoints" / "checkpoint_000001"
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {damaged}: cannot restore (") and last.endswith(
        f"; resume from an older one: --resume {older}"
    )

    result = run_cli("train", "--resume", str(older))  # the advice, as given
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed {older} at iteration 1" in result.stdout
    (aside,) = (run / "checkpoints").glob("superseded-*")
    assert [p.name for p in aside.iterdir()] == ["checkpoint_000002"]  # the damaged one, kept aside
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint_*")) == [
        "checkpoint_000001",
        "checkpoint_000002",  # trained again from checkpoint_000001
    ]
    assert "Stopped by timesteps_total after 2 iterations" in result.stdout


def test_a_signal_during_a_rollout_exits_quietly_and_writes_nothing(trained):
    run = trained[0]
    rollout = Training("rollout", str(run), "--episodes", "256")
    time.sleep(8)  # loading the policy or playing episodes
    rollout.signal(signal.SIGINT)
    assert rollout.finish(120) == 130, rollout.text[-3000:]
    assert "Traceback" not in rollout.text, rollout.text[-3000:]
    assert not (run / "rollout").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_exits_quietly_and_leaves_no_run(tmp_path, signum):
    training = long_run(tmp_path / "run")
    training.wait_for("^starting Ray")
    time.sleep(1)  # inside ray.init or the algorithm's build
    training.signal(signum)
    assert training.finish(120) == 128 + signum, training.text[-3000:]
    assert "Traceback" not in training.text and "SIGTERM received" not in training.text, training.text[-3000:]
    assert not (tmp_path / "run").exists()  # a new run without a checkpoint is not left half-made


def test_a_resume_stopped_during_start_up_keeps_the_run_as_it_was(trained, tmp_path):
    run = copy_of(trained[0], tmp_path)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    training = Training("train", "--resume", str(run), "--set", "stop.timesteps_total=100000")
    training.wait_for("^starting Ray")
    training.signal(signal.SIGTERM)
    assert training.finish(120) == 143, training.text[-3000:]
    assert "Traceback" not in training.text
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_exits_at_once_quietly_and_the_run_stays_resumable(tmp_path, signum):
    from procgen_rl.run_dir import RunDir

    training = long_run(tmp_path / "run")
    training.wait_for(r"^\[metrics\] iteration=2 ")  # checkpoint_000001 is complete
    training.signal(signum)
    training.wait_for("finishing this iteration")
    stopped = time.time()
    training.signal(signum)
    assert training.finish(60) == 128 + signum, training.text[-3000:]
    assert time.time() - stopped < 10  # at once, not after the iteration
    assert "again: exiting now" in training.text and "Traceback" not in training.text, training.text[-3000:]
    run = RunDir(tmp_path / "run")
    assert run.was_interrupted() and run.latest_checkpoint()  # `--resume-interrupted` continues it


def test_a_full_disk_while_checkpointing_is_one_line_and_the_run_resumes(tmp_path):
    # A 12 MB filesystem holds the smoke run's first checkpoint (~8 MB), not its second.
    with tmpfs(tmp_path / "disk", "12m") as disk:
        run = disk / "run"
        result = run_cli("train", SMOKE, "--run-dir", str(run))
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last == (
            f"error: {run}/checkpoints/checkpoint_000002.partial: cannot write the checkpoint (no space left "
            f"on device); {run}/checkpoints/checkpoint_000001 is still the latest: free space, then "
            f"`procgen-rl train --resume {run}`"
        )
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint_000001"]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        resumed = run_cli("train", "--resume", str(run))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "Stopped by timesteps_total after 2 iterations" in resumed.stdout


def test_a_full_disk_before_the_first_checkpoint_leaves_no_run(tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        result = run_cli("train", SMOKE, "--run-dir", str(disk / "run"))
        assert result.returncode == 2, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert "cannot write the checkpoint (no space left on device); no checkpoint was written" in last
        assert "Traceback" not in result.stderr
        assert list(disk.iterdir()) == []
