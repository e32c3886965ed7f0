"""The native backend: this process trains, on a local Ray it starts (or RAY_ADDRESS's cluster)."""

from __future__ import annotations

import os
import secrets

from procgen_rl import envvars
from procgen_rl.launchers import Job, LaunchOptions, Outcome
from procgen_rl.layout import Layout, place_on_this_machine


def local_ray_token() -> None:
    """A local Ray of this run's own, with token auth and a fresh token: nothing goes to ~/.ray.
    Ray reads these when it is imported, so this runs before the trainer imports it."""
    if not os.environ.get(envvars.RAY_ADDRESS):
        os.environ.setdefault(envvars.RAY_AUTH_TOKEN, secrets.token_hex(16))
        os.environ.setdefault(envvars.RAY_AUTH_MODE, "token")


def place(job: Job, options: LaunchOptions) -> Layout:
    """This machine learns and samples (with RAY_ADDRESS, the runners go wherever that cluster has
    room). Its Ray's token is set here, before the build check imports Ray."""
    local_ray_token()
    return place_on_this_machine(job.experiment, job.explicit)


def launch(job: Job, options: LaunchOptions, layout: Layout) -> Outcome:
    from procgen_rl.trainer import train

    job.local_run.write_config(job.experiment)
    train(job.experiment, job.local_run, job.resume)
    return Outcome.of(job.local_run)
