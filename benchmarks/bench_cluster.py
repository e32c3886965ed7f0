"""Sampling throughput of the compose cluster for several worker counts, in env steps per second.

For each WORKERS value it starts a fresh cluster (ray-head + WORKERS ray-worker containers of the
image, each limited to its share of this machine's CPUs), places the experiment's env runners as
`procgen-rl train --backend compose` does (procgen_rl.layout, on the head when WORKERS=0),
samples on all of them in parallel for --seconds, and prints the layout and the rate. Learning is
left out: this measures how sampling grows with containers; the output says how many cores there
were.

Usage: python benchmarks/bench_cluster.py experiments/ppo-8m.yaml --workers 0 1 2 [--seconds 30]
(`make bench-cluster`). Prints figures and writes one record per WORKERS value into
benchmarks/records/ (docs/performance.md); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RESULT_PREFIX = "[bench-cluster] "
SAMPLE_STEPS_PER_ENV = 16  # per sample() call and env


def measure(experiment_path: str, layout: list[str], seconds: float) -> None:
    """Inside the head: time parallel sample() calls on every remote env runner of the host's `layout`
    (--set items)."""
    import ray

    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.trainer import build_algo, build_algorithm_config, init_ray

    experiment = load_experiment(experiment_path, parse_set_args(layout))
    per_runner, runners = experiment.num_envs_per_env_runner, experiment.resources.num_env_runners
    init_ray(experiment)
    algo = build_algo(build_algorithm_config(experiment))
    chunk = per_runner * SAMPLE_STEPS_PER_ENV  # short calls, so --seconds bounds the measurement

    def sample_all() -> int:
        batches = algo.env_runner_group.foreach_env_runner(
            lambda runner: sum(len(e) for e in runner.sample(num_timesteps=chunk)), local_env_runner=False
        )
        return sum(batches)

    sample_all()  # warm-up: actors placed, models built
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += sample_all()
    rate = done / (time.perf_counter() - started)
    hosts = sorted({n["NodeManagerHostname"] for n in ray.nodes() if n["Alive"]})
    print(
        RESULT_PREFIX
        + json.dumps({"runners": runners, "envs_per_runner": per_runner, "steps_per_s": rate, "nodes": len(hosts)}),
        flush=True,
    )
    algo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--image", default=None, help="default: the CPU image of this version")
    parser.add_argument("--measure", nargs="*", help=argparse.SUPPRESS)  # the head's driver mode, with the layout
    args = parser.parse_args()
    if args.measure is not None:
        measure(args.experiment, args.measure, args.seconds)
        return

    import subprocess

    import records
    from procgen_rl.config import read_experiment
    from procgen_rl.launchers import DEFAULT_IMAGE
    from procgen_rl.launchers.compose import Cluster, cluster_hosts, cluster_slots, worker_cpus
    from procgen_rl.launchers.docker_engine import check_docker
    from procgen_rl.layout import place

    image = args.image or DEFAULT_IMAGE
    check_docker(image)
    print(
        f"compose sampling bench: {Path(args.experiment).name}, image {image}, "
        f"{os.cpu_count()} host cores, {args.seconds:.0f} s per point",
        flush=True,
    )
    for workers in args.workers:
        experiment, explicit = read_experiment(args.experiment)
        cpus = worker_cpus(workers, None)
        head, samplers = cluster_hosts(workers, cpus)
        layout = place(experiment, explicit, head, samplers, f"WORKERS={workers}", spread=True)
        print(f"WORKERS={workers}: {layout.describe()}", flush=True)
        res = experiment.resources
        driver = [
            "python",
            str(Path(__file__).resolve()),
            str(Path(args.experiment).resolve()),
            "--seconds",
            str(args.seconds),
            "--measure",
            "resources.layout=manual",
            f"resources.num_env_runners={res.num_env_runners}",
            f"resources.num_cpus_per_env_runner={res.num_cpus_per_env_runner}",
            "resources.spread_env_runners=true",
        ]
        head_slots, worker_slots = cluster_slots(layout, workers)
        cluster = Cluster(image, workers, worker_slots, head_slots, cpus=cpus)
        cluster.up()
        try:  # a driver attached to the waiting head, as `procgen-rl cluster up` describes
            head = cluster.container("ray-head")
            log = subprocess.run(["docker", "exec", head, *driver], capture_output=True, text=True).stdout
        finally:
            cluster.down()
        found = [json.loads(line[len(RESULT_PREFIX) :]) for line in log.splitlines() if line.startswith(RESULT_PREFIX)]
        if not found:
            sys.exit(f"error: WORKERS={workers}: no result from the head; its log ends:\n{log[-3000:]}")
        r = found[0]
        print(
            f"WORKERS={workers}: sampling {r['steps_per_s']:8.0f} steps/s  ({r['runners']} env runner(s) x "
            f"{r['envs_per_runner']} envs on {'the head' if workers == 0 else f'{workers} worker(s)'}, "
            f"{r['nodes']} Ray nodes)",
            flush=True,
        )
        records.write(
            "cluster",
            records.measurement(args.experiment, [], workers=workers),
            {
                "steps_per_s": round(r["steps_per_s"]),
                "env_runners": r["runners"],
                "envs_per_runner": r["envs_per_runner"],
                "ray_nodes": r["nodes"],
                "worker_cpus": cpus,
                "layout": layout.describe(),
                "seconds": args.seconds,
                "image": image,
            },
        )


if __name__ == "__main__":
    main()
