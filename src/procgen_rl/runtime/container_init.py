"""PID 1 of the image: run the command, pass stop signals to the training script, reap orphans.

SageMaker stops a job (spot interruption, StopTrainingJob) with SIGTERM to PID 1 and SIGKILL
about two minutes later. As PID 1, the toolkit's `train` would ignore SIGTERM (a process without
a handler ignores it there) and never pass it on, so training died without a checkpoint. Here
SIGTERM/SIGINT go to the process running $SAGEMAKER_PROGRAM, which finishes its iteration,
checkpoints and exits; the toolkit then exits with it. Other commands get the signal directly.
Usage (the image's ENTRYPOINT): python -m procgen_rl.runtime.container_init COMMAND...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from procgen_rl import envvars


def training_script_pids(program: str) -> list[int]:
    """Processes whose command line names the SageMaker program (e.g. sagemaker_entry.py)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # exited meanwhile
            if any(arg.endswith(program.encode()) for arg in argv[1:]):
                pids.append(int(proc.name))
    return pids


def main() -> int:
    child = subprocess.Popen(sys.argv[1:] or ["train"])
    program = os.environ.get(envvars.SAGEMAKER_PROGRAM, "")

    def forward(signum: int, frame: object) -> None:
        for pid in (program and training_script_pids(program)) or [child.pid]:
            os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        pid, status = os.wait()  # reaps orphans re-parented to PID 1 too
        if pid == child.pid:
            return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
