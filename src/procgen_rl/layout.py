"""How a run's env runners spread over the hosts of a cluster: one rule for every launcher.

A multi-host cluster (compose workers, a multi-instance SageMaker job) samples on all of its
sampling hosts: one env runner per host unless the user set `resources.num_env_runners`, and
each host offers enough `env_runner_slot` resources for its share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from procgen_rl.config import Experiment, check_memory, validate

CGROUP_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory.max")  # cgroup v2: a container's memory limit

RUNNERS_KEY = "resources.num_env_runners"


def spread_over_hosts(experiment: Experiment, hosts: int, overrides: Mapping[str, Any], why: str) -> int:
    """Place the env runners on `hosts` sampling hosts; return the slots each host offers.

    `overrides` are the user's explicit settings (--set keys, hyperparameters): when they name
    `resources.num_env_runners` it is kept, else it becomes one runner per host. `why` names the
    host count's origin for the error when the runners cannot split `num_envs`.
    """
    resources = experiment.resources
    if RUNNERS_KEY not in overrides:
        resources.num_env_runners = hosts
        validate(experiment, why, {RUNNERS_KEY: f"{why} (one env runner each)"})
    resources.spread_env_runners = True
    return max(1, math.ceil(resources.num_env_runners / hosts))


def host_memory_bytes() -> int:
    """This host's memory: physical memory, or the container's cgroup limit when lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_MEMORY_LIMIT.read_text().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def check_fits_host(experiment: Experiment) -> None:
    """Refuse, before anything starts, an experiment whose frames alone exceed this host's memory."""
    check_memory(experiment, host_memory_bytes())
