"""Where a run's work goes: env runners, envs, torch threads and GPUs on each host, one rule for every launcher.

With `resources.layout: auto` (the default) `choose` picks, from each host's usable CPUs (its
affinity and its cgroup's CPU quota, so a container's `cpus:` limit counts), GPUs and GPU memory:
the env runners on each host, the envs of each runner (`algorithm.num_envs`, the total, stays, and
with it the learning math), the torch threads of each runner and of the learner, inference on a
GPU where the hosts have one, and the learner's device. A value the experiment sets (in its file,
with --set, as a hyperparameter) stays as set; `layout: manual` keeps the whole section. `choose`
is a pure function of `HostSpec`s: launchers measure this machine or a container's limit, a cloud
job's hosts come from the instance-type table (procgen_rl.instance_types), tests make them up.
docs/layout.md explains the rule and shows what it picks per instance type.

Every launcher places the runners (`place`) before it writes the run's config.yaml, which holds
the result; a multi-host cluster gives each host an `env_runner_slot` Ray resource per runner.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from procgen_rl.config import GIB, Experiment, check_memory, validate
from procgen_rl.errors import ConfigError
from procgen_rl.instance_types import INSTANCE_TYPES

CGROUP_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory.max")  # cgroup v2: a container's memory limit
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" (µs), or "max PERIOD"
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1: cpu.cfs_quota_us (-1: none), cpu.cfs_period_us
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU wherever the NVIDIA driver runs

# Below these envs per runner, a runner's fixed cost per vector step outweighs its batch: on a CPU,
# 16 runners x 4 envs and 8 x 8 sample alike; on a GPU, 4 x 16 beat 16 x 4 (docs/performance.md).
MIN_ENVS_PER_CPU_RUNNER = 4
MIN_ENVS_PER_GPU_RUNNER = 16
RUNNERS_PER_GPU = 4  # the fastest measured on one GPU: 4 runners with a quarter of it each
RUNNER_GPU_GIB = 1.0  # a runner's CUDA context, weights and graphs on its GPU, roughly
LEARNER_GPU_GIB = 4.0  # left free for the learner's batches on its GPU, roughly


@dataclass(frozen=True)
class HostSpec:
    """One host as the layout sees it."""

    name: str  # this machine, ray-worker-1, algo-2
    cpus: int  # usable: affinity and cgroup quota
    gpus: int = 0
    gpu_memory_gib: float = 0.0  # of each GPU (the smallest, where they differ)
    kind: str = ""  # an instance type, or where `cpus` comes from

    def __str__(self) -> str:
        gpus = f", {self.gpus} GPU{'s' * (self.gpus != 1)} of {self.gpu_memory_gib:.0f} GiB" if self.gpus else ""
        kind = f"{self.kind}: " if self.kind else ""
        return f"{self.name} ({kind}{self.cpus} CPU{'s' * (self.cpus != 1)}{gpus})"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by its cgroup's CPU quota (a container's
    `cpus:` limit, cgroup v2 or v1), rounded down and at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    return cpus if quota is None else max(1, min(cpus, int(quota)))


def cgroup_cpu_quota() -> float | None:
    """This cgroup's CPU quota in CPUs, or None where there is none."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
    except (OSError, ValueError):
        try:
            quota = (CGROUP_V1_CPU / "cpu.cfs_quota_us").read_text().strip()
            period = (CGROUP_V1_CPU / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        return int(quota) / int(period) if int(quota) > 0 else None
    except ValueError:  # "max": no quota
        return None


def visible_gpus() -> tuple[int, float]:
    """(GPUs torch sees, GiB of the smallest). Without the NVIDIA driver the answer is 0 without
    importing torch (seconds), unless the process has imported it already."""
    if "torch" not in sys.modules and not (NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())):
        return 0, 0.0
    import torch

    if not torch.cuda.is_available():
        return 0, 0.0
    count = torch.cuda.device_count()
    return count, min(torch.cuda.get_device_properties(i).total_memory for i in range(count)) / GIB


def this_host(name: str = "this machine") -> HostSpec:
    return HostSpec(name, usable_cpus(), *visible_gpus())


def instance_host(name: str, instance_type: str) -> HostSpec | None:
    """A host of a SageMaker instance type, from the table; None for a type the table lacks."""
    known = INSTANCE_TYPES.get(instance_type)
    if known is None:
        return None
    return HostSpec(name, known.vcpus, known.gpus, known.gpu_memory_gib, instance_type)


def unknown_instance_type(instance_type: str) -> ConfigError:
    families = sorted({name.split(".")[1] for name in INSTANCE_TYPES})
    return ConfigError(
        f"instance type {instance_type!r} is not in procgen_rl/instance_types.py (families {', '.join(families)}), "
        "whose vCPUs and GPUs plan a job's layout: add it there"
    )


@dataclass(frozen=True)
class Fixed:
    """The layout values the user set (`resources.*`); None: the layout chooses."""

    num_env_runners: int | None = None
    num_cpus_per_env_runner: int | None = None
    num_gpus_per_env_runner: float | None = None
    infer_on_host_gpu: bool | None = None
    learner_device: str | None = None
    learner_threads: int | None = None


def fixed_values(experiment: Experiment, explicit: Collection[str]) -> Fixed:
    """What the user set, by the dotted keys of `explicit`; with `layout: manual`, all of it."""
    res = experiment.resources
    values = {
        f.name: getattr(res, f.name)
        for f in dataclasses.fields(Fixed)
        if res.layout == "manual" or f"resources.{f.name}" in explicit
    }
    env_runners = experiment.algorithm.rllib.get("env_runners")
    if isinstance(env_runners, dict) and "num_gpus_per_env_runner" in env_runners:
        values["num_gpus_per_env_runner"] = env_runners["num_gpus_per_env_runner"]  # applied last: it wins
    return Fixed(**values)


@dataclass(frozen=True)
class Layout:
    """The chosen work of every host; `apply` writes it into the experiment's resources."""

    mode: str  # auto | manual
    learner: HostSpec
    samplers: tuple[HostSpec, ...]
    env_runners: tuple[int, ...]  # on each sampler
    envs_per_env_runner: int
    cpus_per_env_runner: int
    gpus_per_env_runner: float
    infer_on_host_gpu: bool
    learner_device: str
    learner_threads: int

    @property
    def num_env_runners(self) -> int:
        return sum(self.env_runners)

    def runners_on(self, host: str) -> int:
        return sum(n for spec, n in zip(self.samplers, self.env_runners, strict=True) if spec.name == host)

    def summary(self) -> str:
        """What every runner and the learner do, in one line."""
        device = self.learner_device
        if device == "auto":
            device = "the GPU (auto: where the run sees one)" if self.learner.gpus else "cpu (auto)"
        threads = (
            f"{self.learner_threads} torch thread{'s' * (self.learner_threads != 1)}"
            if self.learner_threads
            else "torch's default threads"
        )
        learner = f"learner on {device} with {threads}"
        if not self.num_env_runners:
            return f"layout {self.mode}: no env runners, the driver samples; {learner}"
        if self.gpus_per_env_runner:
            inference = f"inference on a GPU ({self.gpus_per_env_runner:g} of one each)"
        elif self.infer_on_host_gpu:
            inference = "inference on the GPU of hosts that have one, else the CPU"
        else:
            inference = "inference on the CPU"
        runners = (
            f"{self.num_env_runners} env runner{'s' * (self.num_env_runners != 1)} x {self.envs_per_env_runner} envs, "
            f"{self.cpus_per_env_runner} CPU{'s' * (self.cpus_per_env_runner != 1)} and torch thread"
            f"{'s' * (self.cpus_per_env_runner != 1)} each, {inference}"
        )
        return f"layout {self.mode}: {runners}; {learner}"

    def hosts(self) -> list[str]:
        """Each host and its part: the learner's first."""
        parts = {self.learner: ["learner"]}
        for spec, n in zip(self.samplers, self.env_runners, strict=True):
            parts.setdefault(spec, []).append(f"{n} env runner{'s' * (n != 1)}")
        return [f"{spec}: {', '.join(roles)}" for spec, roles in parts.items()]

    def describe(self) -> str:
        """The line a run starts with."""
        return " | ".join([self.summary(), *self.hosts()])


def plan_text(layout: Layout) -> str:
    """The layout as `procgen-rl plan` prints it: what every runner and the learner do, then each host."""
    return "\n".join([layout.summary(), *(f"  {host}" for host in layout.hosts())])


def gpu_room(host: HostSpec, learns: bool) -> int:
    """Env runners that can infer on the host's GPUs: RUNNERS_PER_GPU on each, fewer where its
    memory is short (the learner's GPU keeps LEARNER_GPU_GIB for itself)."""

    def on_one(free_gib: float) -> int:
        return min(RUNNERS_PER_GPU, int(max(0.0, free_gib) // RUNNER_GPU_GIB))

    if not host.gpus:
        return 0
    first = on_one(host.gpu_memory_gib - LEARNER_GPU_GIB * learns)
    return first + on_one(host.gpu_memory_gib) * (host.gpus - 1)


def choose(
    num_envs: int,
    learner: HostSpec,
    samplers: Sequence[HostSpec],
    fixed: Fixed = Fixed(),
    why: str = "this machine",
    mode: str = "auto",
) -> Layout:
    """The layout of `num_envs` envs on the hosts that sample, the learner on `learner` (one of
    them, or a host of its own); `why` names the hosts in errors.

    Each host offers room for runners of one CPU each (or `num_cpus_per_env_runner`), and on a GPU
    for RUNNERS_PER_GPU per GPU; the runner count is the largest that divides `num_envs`, fits
    that room and keeps each runner at least MIN_ENVS_PER_*_RUNNER wide, with one runner on every
    host at least; the runners fill the hosts in proportion to their room, and share each host's
    CPUs (and GPUs) evenly. With GPUs on every sampling host the runners get a Ray share of one;
    where GPU and CPU hosts sample together, runners infer on their host's GPU without one (Ray
    would otherwise keep them all on the GPU hosts).
    """
    share_fixed = fixed.num_gpus_per_env_runner is not None or fixed.infer_on_host_gpu is not None
    reserved = max(1, fixed.num_cpus_per_env_runner or 1)  # the CPUs a runner takes from its host's room

    def on_gpu(host: HostSpec) -> bool:
        if share_fixed:
            return bool(fixed.num_gpus_per_env_runner) or bool(fixed.infer_on_host_gpu and host.gpus)
        return gpu_room(host, host.name == learner.name) > 0

    def room(host: HostSpec) -> int:
        cpu_room = host.cpus // reserved
        if not on_gpu(host):
            return cpu_room
        if fixed.num_gpus_per_env_runner:
            return min(cpu_room, math.floor(host.gpus / fixed.num_gpus_per_env_runner + 1e-9))
        return min(cpu_room, gpu_room(host, host.name == learner.name))

    rooms = [room(host) for host in samplers]
    gpu_hosts = [on_gpu(host) for host in samplers]
    widest = MIN_ENVS_PER_GPU_RUNNER if all(gpu_hosts) else MIN_ENVS_PER_CPU_RUNNER
    if fixed.num_env_runners is None:
        count = runner_count(num_envs, samplers, rooms, widest, why)
    else:
        count = fixed.num_env_runners
    placed = fill(count, rooms)

    threads = fixed.num_cpus_per_env_runner
    if threads is None:
        threads = max(1, min((host.cpus // n for host, n in zip(samplers, placed, strict=True) if n), default=1))
    active = [(host, n, gpu) for host, n, gpu in zip(samplers, placed, gpu_hosts, strict=True) if n]
    for host, n, _ in active:
        if n * threads > host.cpus:
            raise ConfigError(
                f"{why}: {n} env runner{'s' * (n != 1)} x {threads} CPU{'s' * (threads != 1)} need "
                f"{n * threads} CPUs on {host}: "
                "lower resources.num_env_runners or resources.num_cpus_per_env_runner"
            )
    if share_fixed:
        share, host_gpu = fixed.num_gpus_per_env_runner or 0.0, bool(fixed.infer_on_host_gpu)
    elif active and all(gpu for _, _, gpu in active):
        share, host_gpu = min(gpu_share(host, n) for host, n, _ in active), False
    else:
        share, host_gpu = 0.0, any(gpu for _, _, gpu in active)
    for host, n, _ in active:
        if n * share > host.gpus + 1e-9:
            raise ConfigError(
                f"{why}: {n} env runner{'s' * (n != 1)} x {share:g} GPU need {n * share:g} GPUs on {host}: "
                "lower resources.num_gpus_per_env_runner (0: inference on the CPU)"
            )
    return Layout(
        mode,
        learner,
        tuple(samplers),
        tuple(placed),
        num_envs // max(1, count),
        threads,
        share,
        host_gpu,
        fixed.learner_device or ("auto" if learner.gpus else "cpu"),  # auto: the GPU, where the run sees it
        learner.cpus if fixed.learner_threads is None else fixed.learner_threads,
    )


def runner_count(num_envs: int, samplers: Sequence[HostSpec], rooms: list[int], widest: int, why: str) -> int:
    """The most runners, at least one per host, that divide `num_envs`, fit the hosts' room and
    keep `widest` envs each; where none does, the fewest narrower ones."""
    hosts = len(samplers)
    full = [str(host) for host, room in zip(samplers, rooms, strict=True) if not room]
    if full:
        raise ConfigError(
            f"{why}: no room for an env runner on {', '.join(full)} (a runner takes "
            "resources.num_cpus_per_env_runner CPUs, and a GPU share where set)"
        )
    held = min(sum(rooms), num_envs)
    most = min(held, max(hosts, num_envs // widest))
    wide = [count for count in range(most, hosts - 1, -1) if num_envs % count == 0]
    narrow = [count for count in range(most + 1, held + 1) if num_envs % count == 0]
    if wide or narrow:
        return (wide or narrow)[0]
    raise ConfigError(
        f"{why}: no env runner count from {hosts} (one per host) to {held} (what the hosts hold) splits "
        f"algorithm.num_envs={num_envs} evenly: make it a multiple of {hosts}, or set resources.num_env_runners"
    )


def fill(count: int, rooms: list[int]) -> list[int]:
    """`count` runners over hosts in proportion to their room: one each first, none past its room
    while another host has some left."""
    placed = [0] * len(rooms)
    for _ in range(count):
        host = min(
            range(len(rooms)),
            key=lambda i: (placed[i] >= rooms[i], placed[i] / rooms[i] if rooms[i] else math.inf, i),
        )
        placed[host] += 1
    return placed


def gpu_share(host: HostSpec, runners: int) -> float:
    """A runner's Ray share of a GPU: the host's runners spread evenly over its GPUs, at most one
    each; rounded down to Ray's precision so that the shares add up."""
    per_gpu = math.ceil(runners / host.gpus)
    return math.floor(1e4 / per_gpu) / 1e4


def apply(experiment: Experiment, layout: Layout, spread: bool, why: str) -> None:
    """Write the layout into the experiment's resources; `spread`: runners go to hosts by their
    env runner slots (a multi-host cluster)."""
    res = experiment.resources
    res.num_env_runners = layout.num_env_runners
    res.num_cpus_per_env_runner = layout.cpus_per_env_runner
    res.num_gpus_per_env_runner = layout.gpus_per_env_runner
    res.infer_on_host_gpu = layout.infer_on_host_gpu
    res.learner_device = layout.learner_device
    res.learner_threads = layout.learner_threads
    res.spread_env_runners = res.spread_env_runners or spread
    validate(experiment, why, {"resources.num_env_runners": f"{why} (layout {layout.mode})"})


def place(
    experiment: Experiment,
    explicit: Collection[str],
    learner: HostSpec,
    samplers: Sequence[HostSpec],
    why: str,
    spread: bool = False,
) -> Layout:
    """Choose the layout for these hosts, keeping what the user set (`explicit`: dotted keys), and
    write it into the experiment."""
    fixed = fixed_values(experiment, explicit)
    layout = choose(experiment.algorithm.num_envs, learner, samplers, fixed, why, experiment.resources.layout)
    apply(experiment, layout, spread, why)
    return layout


def place_on_this_machine(experiment: Experiment, explicit: Collection[str]) -> Layout:
    """The native layout: this machine learns and samples."""
    host = this_host()
    return place(experiment, explicit, host, [host], "this machine")


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
