"""Throughput of an experiment on this machine, in env steps per second, three ways.

    env       the batched Procgen env alone, random actions (the ceiling)
    sampling  RLlib's env runner: env + connectors + IMPALA-CNN inference, no learning
    training  full algo.train() iterations: sampling + learning (what a run's steps_per_s shows)

Usage: python scripts/bench.py experiments/ppo-8m.yaml [--set KEY=VALUE ...] [--iterations 2]
Prints figures; asserts nothing. Peak RSS is this process's (env runners at num_env_runners=0
live in it).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def timed_rate(step: callable, seconds: float) -> float:
    """Steps per second of `step()` (which returns steps done), after one warm-up call."""
    step()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += step()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the env and sampling phases")
    parser.add_argument("--iterations", type=int, default=2, help="training iterations after a warm-up one")
    args = parser.parse_args()

    import torch

    from procgen_rl.config import load_experiment, parse_set_args
    from procgen_rl.envs import ProcgenVectorEnv
    from procgen_rl.trainer import build_algorithm_config, init_ray

    experiment = load_experiment(args.experiment, parse_set_args(args.overrides))
    num_envs = experiment.num_envs_per_env_runner
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"experiment {experiment.name} | commit {commit or '?'} | {platform.processor() or platform.machine()} "
          f"{os.cpu_count()} cores | torch {torch.__version__} threads {torch.get_num_threads()} | "
          f"cuda {torch.cuda.is_available()}")
    print(f"algorithm {experiment.algorithm.name}: {experiment.algorithm.num_envs} envs x "
          f"{experiment.algorithm.num_steps} steps, {experiment.algorithm.update_epochs} epochs, "
          f"{experiment.algorithm.num_minibatches} minibatches, env runners {experiment.resources.num_env_runners}")

    env = ProcgenVectorEnv(experiment.env_config, num_envs)
    env.reset()
    rng = np.random.default_rng(0)

    def env_step() -> int:
        env.step(rng.integers(0, 15, num_envs))
        return num_envs

    env_rate = timed_rate(env_step, args.seconds)
    env.close()
    print(f"env       {env_rate:10.0f} steps/s  ({num_envs} envs in one batch, random actions)")

    config = build_algorithm_config(experiment)
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    runner = SingleAgentEnvRunner(config=config)
    fragment = num_envs * experiment.algorithm.num_steps
    sample_rate = timed_rate(lambda: sum(len(e) for e in runner.sample(num_timesteps=fragment)), args.seconds)
    runner.stop()
    print(f"sampling  {sample_rate:10.0f} steps/s  ({sample_rate / env_rate:.0%} of env; "
          f"one env runner with inference)")

    init_ray(experiment)
    algo = config.build_algo()
    algo.train()  # warm-up: first iteration pays for actor start and compilation
    steps, started = 0, time.perf_counter()
    for _ in range(args.iterations):
        steps += int(algo.train()["env_runners"]["num_env_steps_sampled"])
    train_rate = steps / (time.perf_counter() - started)
    algo.stop()
    print(f"training  {train_rate:10.0f} steps/s  ({args.iterations} iterations of "
          f"{experiment.algorithm.train_batch_size} steps after a warm-up one)")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS  {peak_mib:10.0f} MiB     (this process)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
