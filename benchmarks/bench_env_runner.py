"""One env runner's vector step: procgen_rl's env runner, RLlib's with procgen_rl's connector
pieces, and RLlib's with its default pipelines.

Usage: python benchmarks/bench_env_runner.py experiments/ppo-8m.yaml [--set KEY=VALUE ...] [--rounds 20]
Builds the three env runners of the experiment in this process (the experiment's envs per
runner, this process's torch threads) and alternates one fragment of `sample()` on each, round
by round, so that all see the same load; prints the median ms per vector step of each and the
connectors' share by the runner's own timers, and writes them as a record into
benchmarks/records/ (docs/performance.md). Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.metrics import CONNECTOR_PIPELINE_TIMER, ENV_TO_MODULE_CONNECTOR, MODULE_TO_ENV_CONNECTOR

import records
from procgen_rl.config import parse_set_args, read_experiment
from procgen_rl.layout import place_on_this_machine
from procgen_rl.trainer import build_algorithm_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=20, help="fragments sampled by each runner, alternating")
    args = parser.parse_args()

    experiment, explicit = read_experiment(args.experiment, parse_set_args(args.overrides))
    place_on_this_machine(experiment, explicit)  # a runner's envs as a native run has them
    ours = build_algorithm_config(experiment)
    # RLlib's pipelines at their fastest for Discrete actions: no unsquashing or clipping.
    defaults = (
        build_algorithm_config(experiment)
        .environment(normalize_actions=False, clip_actions=False)
        .env_runners(
            env_to_module_connector=None,
            add_default_connectors_to_env_to_module_pipeline=True,
            module_to_env_connector=None,
            add_default_connectors_to_module_to_env_pipeline=True,
        )
    )
    runners = {
        "RLlib defaults": SingleAgentEnvRunner(config=defaults),
        "RLlib + pieces": SingleAgentEnvRunner(config=ours),
        "procgen_rl": ours.env_runner_cls(config=ours),
    }
    num_envs = experiment.num_envs_per_env_runner
    fragment = num_envs * experiment.algorithm.num_steps
    print(
        f"{experiment.name}: {num_envs} envs per runner, fragments of {fragment} steps, {args.rounds} rounds, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )

    step_ms: dict[str, list[float]] = {name: [] for name in runners}
    connector_ms: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        runner.sample(num_timesteps=fragment)  # warm-up
    for _ in range(args.rounds):
        for name, runner in runners.items():
            started = time.perf_counter()
            steps = sum(len(episode) for episode in runner.sample(num_timesteps=fragment))
            step_ms[name].append(1e3 * (time.perf_counter() - started) * num_envs / steps)
            connector_ms[name].append(
                1e3
                * sum(
                    runner.metrics.peek((key, CONNECTOR_PIPELINE_TIMER))
                    for key in (ENV_TO_MODULE_CONNECTOR, MODULE_TO_ENV_CONNECTOR)
                )
            )
    figures: dict = {
        "envs_per_runner": num_envs,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "step_ms": {},
    }
    for name, runner in runners.items():
        print(
            f"{name:15s} {statistics.median(step_ms[name]):6.2f} ms per vector step "
            f"(range {min(step_ms[name]):.2f}-{max(step_ms[name]):.2f}), of which connectors "
            f"{statistics.median(connector_ms[name]):.2f} ms",
            flush=True,
        )
        figures["step_ms"][name] = {
            "median": round(statistics.median(step_ms[name]), 2),
            "min": round(min(step_ms[name]), 2),
            "max": round(max(step_ms[name]), 2),
            "connectors": round(statistics.median(connector_ms[name]), 2),
        }
        runner.stop()
    records.write("env_runner", records.measurement(args.experiment, args.overrides), figures)


if __name__ == "__main__":
    main()
