"""Throughput of an experiment on this machine, in env steps per second, measured in one run.

    env       the batched Procgen env alone, random actions
    inference the IMPALA-CNN forward alone at the env runners' batch, on their device (on a GPU
              as a CUDA graph, as they run it); with env, the sampling ceiling
    lean PPO  benchmarks/lean_ppo.py (lean_ppg.py for PPG): same env, network and hyperparameters,
              one process, no Ray
    sampling  the local env runner (procgen_rl.env_runner, on the CPU): env + IMPALA-CNN inference, no
              learning; one vector step split by the runner's own timers
    training  full algo.train() iterations: sampling + learning (what a run's steps_per_s shows)
              and the remote env runners' own step timers from the last iteration

Usage: python benchmarks/bench.py experiments/ppo-8m.yaml [--set KEY=VALUE ...] [--iterations 1]
Prints figures, the harness/lean ratio and each phase's peak RSS and load average, and writes
them as a record into benchmarks/records/ (docs/performance.md); asserts nothing. After a
warm-up iteration each, the lean PPO and the harness alternate iteration by iteration, so that
on a shared machine both see the same load: compare the ratio. An asynchronous harness (APPO,
IMPALA) is timed after the lean PPO, its iterations back to back.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable

import numpy as np


def timed_rate(step: Callable[[], int], seconds: float) -> float:
    """Steps per second of `step()` (which returns steps done), after one warm-up call."""
    step()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += step()
    return done / (time.perf_counter() - started)


class Phase:
    """Peak RSS (VmHWM, reset at the start) and load average around one phase of the bench."""

    def __enter__(self) -> Phase:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets this process's peak RSS
        self.load_before = os.getloadavg()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.load_after = os.getloadavg()[0]
        with open("/proc/self/status") as f:
            self.peak_mib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

    def __str__(self) -> str:
        return f"peak RSS {self.peak_mib:6.0f} MiB, load {self.load_before:.1f} -> {self.load_after:.1f}"

    def figures(self) -> dict[str, float]:
        return {
            "peak_rss_mib": round(self.peak_mib),
            "load_before": round(self.load_before, 1),
            "load_after": round(self.load_after, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the env and sampling phases")
    parser.add_argument("--iterations", type=int, default=1, help="training iterations timed, after a warm-up one")
    args = parser.parse_args()

    import torch

    import lean_ppg
    import lean_ppo
    import records
    from procgen_rl.config import parse_set_args, read_experiment
    from procgen_rl.envs import ProcgenVectorEnv
    from procgen_rl.layout import place_on_this_machine
    from procgen_rl.models.impala_cnn import CUDAGraphForward
    from procgen_rl.trainer import build_algo, build_algorithm_config, init_ray, sampled, use_learner_threads

    experiment, explicit = read_experiment(args.experiment, parse_set_args(args.overrides))
    layout = place_on_this_machine(experiment, explicit)  # as `procgen-rl train --backend native` places it
    lean = lean_ppg if experiment.algorithm.name == "PPG" else lean_ppo  # the reference, its network included
    algo_cfg, num_envs = experiment.algorithm, experiment.num_envs_per_env_runner
    commit, dirty = records.git_commit()
    machine = records.hardware()
    print(
        f"experiment {experiment.name} | commit {commit[:12]}{' (dirty)' if dirty else ''} | {machine['cpu']} "
        f"{machine['cores']} cores | torch {torch.__version__} threads {torch.get_num_threads()} | "
        f"GPUs {', '.join(machine['gpus']) or 'none'}"
    )
    print(layout.describe())
    use_learner_threads(experiment)  # the learner trains in this process, as in a native run
    figures: dict = {
        "envs_per_runner": num_envs,
        "torch_threads": torch.get_num_threads(),
        "layout": layout.describe(),
        "phases": {},
    }
    print(
        f"algorithm {algo_cfg.name}: {algo_cfg.num_envs} envs x {algo_cfg.num_steps} steps, "
        f"{algo_cfg.update_epochs} epochs, {algo_cfg.num_minibatches} minibatches, "
        f"env runners {experiment.resources.num_env_runners}; timing {args.iterations} iteration(s) "
        f"of {algo_cfg.train_batch_size} steps after a warm-up one",
        flush=True,
    )

    with Phase() as phase:
        env = ProcgenVectorEnv(experiment.env_config, num_envs)
        env.reset()
        rng = np.random.default_rng(0)

        def env_step() -> int:
            env.step(rng.integers(0, 15, num_envs))
            return num_envs

        env_rate = timed_rate(env_step, args.seconds)
        env.close()
    print(f"env       {env_rate:10.0f} steps/s  ({num_envs} envs in one batch, random actions) | {phase}", flush=True)
    figures["env_steps_per_s"], figures["phases"]["env"] = round(env_rate), phase.figures()

    config = build_algorithm_config(experiment)
    # Where the remote env runners infer: a GPU when the experiment gives them a share of one.
    runner_device = torch.device("cuda" if config.num_gpus_per_env_runner > 0 and torch.cuda.is_available() else "cpu")
    with Phase() as phase:
        net = lean.NET.from_model_config(
            env.single_observation_space.shape, int(env.single_action_space.n), experiment.model.custom_model_config
        ).to(runner_device)
        forward = CUDAGraphForward(net)  # as the runners run it: a CUDA graph on a GPU
        frames = torch.randint(0, 256, (num_envs, *env.single_observation_space.shape), dtype=torch.uint8)

        def inference_step() -> int:
            with torch.no_grad():
                logits, _ = forward(frames.to(runner_device))  # the frames come from the env, on the CPU
                logits.cpu()  # and the actions go back to it: on a GPU this waits for the forward
            return num_envs

        inference_rate = timed_rate(inference_step, args.seconds)
    # Sampling alternates env steps and forward passes, so its ceiling is the two rates in series.
    sampling_bound = 1.0 / (1.0 / env_rate + 1.0 / inference_rate)
    print(
        f"inference {inference_rate:10.0f} frames/s (the network's forward alone on the runners' device, "
        f"{runner_device.type}, batch {num_envs}, frames in and logits out); env + inference "
        f"in series: {sampling_bound:.0f} steps/s, the sampling ceiling | {phase}",
        flush=True,
    )
    figures |= {"inference_frames_per_s": round(inference_rate), "inference_device": runner_device.type}
    figures["phases"]["inference"] = phase.figures()

    lean_args = lean.Args.from_experiment(experiment, total_timesteps=sys.maxsize)
    lean_updates = lean.train(experiment, lean_args)

    lean_sample_s: list[float] = []  # the lean rollouts alone, to compare with RLlib's sampling

    def lean_iteration() -> tuple[int, str]:
        record = next(lean_updates)
        lean_sample_s.append(record["sample_s"])
        return lean_args.batch_size, f"rollout {record['sample_s']:.0f} s, update {record['update_s']:.0f} s"

    seconds, steps = {"lean": 0.0, "harness": 0.0}, {"lean": 0, "harness": 0}
    iteration_s: dict[str, list[float]] = {"lean": [], "harness": []}

    def timed_iteration(i: int, name: str, iterate: Callable[[], tuple[int, str]]) -> None:
        started, load = time.perf_counter(), os.getloadavg()[0]
        done, detail = iterate()
        took = time.perf_counter() - started
        steps[name] += done
        seconds[name] += took
        iteration_s[name].append(round(took, 1))
        print(
            f"  iteration {i + 1} {name:8s} {took:6.0f} s ({detail}), load {load:.1f} -> {os.getloadavg()[0]:.1f}",
            flush=True,
        )

    with Phase() as lean_warmup:
        lean_iteration()
    print(
        f"lean      warm-up iteration done (benchmarks/{lean.__name__}.py, torch threads {torch.get_num_threads()}) "
        f"| {lean_warmup}",
        flush=True,
    )
    figures["phases"]["lean PPO"] = lean_warmup.figures()

    from ray.rllib.algorithms.impala import IMPALAConfig

    # IMPALA's and APPO's runners finish their sample requests between algo.train() calls, and
    # the next call counts those steps: alternated with the lean PPO, each harness iteration
    # would count steps sampled while the lean one ran. So these time the lean PPO first, then
    # the harness's iterations back to back (their ratio is not comparable anyway).
    asynchronous = isinstance(config, IMPALAConfig)  # APPOConfig is one too
    if asynchronous:
        for i in range(args.iterations):
            timed_iteration(i, "lean", lean_iteration)

    from ray.rllib.utils.metrics import (
        CONNECTOR_PIPELINE_TIMER,
        ENV_RUNNER_RESULTS,
        ENV_STEP_TIMER,
        ENV_TO_MODULE_CONNECTOR,
        MODULE_TO_ENV_CONNECTOR,
        RLMODULE_INFERENCE_TIMER,
    )

    # One vector step's parts by RLlib's own per-step timers (moving averages, in seconds).
    step_timers = (
        ("env", (ENV_STEP_TIMER,)),
        ("env-to-module", (ENV_TO_MODULE_CONNECTOR, CONNECTOR_PIPELINE_TIMER)),
        ("inference", (RLMODULE_INFERENCE_TIMER,)),
        ("module-to-env", (MODULE_TO_ENV_CONNECTOR, CONNECTOR_PIPELINE_TIMER)),
    )

    with Phase() as phase:
        runner = config.env_runner_cls(config=config)  # as RLlib's local runner (index 0): RLlib keeps it on the CPU
        sampling_device = next(runner.module.parameters()).device.type
        fragment = num_envs * algo_cfg.num_steps
        sample_rate = timed_rate(lambda: sum(len(e) for e in runner.sample(num_timesteps=fragment)), args.seconds)
        # The runner's own per-step timers (moving averages over the last few hundred steps).
        split_ms = {name: 1e3 * runner.metrics.peek(key) for name, key in step_timers}
        runner.stop()
    print(
        f"sampling  {sample_rate:10.0f} steps/s  ({sample_rate / env_rate:.0%} of env, "
        f"{sample_rate / sampling_bound:.0%} of the ceiling; "
        f"one env runner with inference on {sampling_device}) | {phase}",
        flush=True,
    )
    step_ms = 1e3 * num_envs / sample_rate
    split_ms["the rest"] = step_ms - sum(split_ms.values())
    print(
        f"          one vector step of {num_envs} envs: {step_ms:.2f} ms = "
        + " + ".join(f"{name} {ms:.2f}" for name, ms in split_ms.items())
        + " (the runner's timers; the rest: episodes, callbacks, metrics)",
        flush=True,
    )
    figures |= {
        "sampling_steps_per_s": round(sample_rate),
        "sampling_device": sampling_device,
        "sampling_step_ms": {name: round(ms, 2) for name, ms in split_ms.items()},
    }
    figures["phases"]["sampling"] = phase.figures()

    init_ray(experiment)
    algo = build_algo(config)

    # RLlib's own timers are smoothed across iterations (the warm-up dominates them), so the
    # learner's share of each iteration is timed here, around the call the algorithm makes.
    learner_s: list[float] = []
    learner_update = algo.learner_group.update

    def timed_learner_update(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return learner_update(*args, **kwargs)
        finally:
            learner_s.append(time.perf_counter() - started)

    algo.learner_group.update = timed_learner_update

    last_result: dict = {}

    def harness_iteration() -> tuple[int, str]:
        started, updates = time.perf_counter(), len(learner_s)
        result = algo.train()
        last_result.update(result)
        took, learned = time.perf_counter() - started, sum(learner_s[updates:])
        return (
            sampled(result, "num_env_steps_sampled"),  # as the trainer counts: APPO may have none
            f"learner {learned:.0f} s in {len(learner_s) - updates} update call(s), "
            f"sampling and the rest {took - learned:.0f} s",
        )

    with Phase() as harness_warmup:
        harness_iteration()
    print(
        f"training  warm-up iteration done (RLlib algo.train(), learner in this process, torch threads "
        f"{torch.get_num_threads()}) | {harness_warmup} (the lean one resident too)",
        flush=True,
    )
    figures["phases"]["training"] = harness_warmup.figures()

    # A synchronous harness alternates with the lean PPO, one iteration each, so that both see
    # the same share of a shared machine.
    for i in range(args.iterations):
        if not asynchronous:
            timed_iteration(i, "lean", lean_iteration)
        timed_iteration(i, "harness", harness_iteration)
    lean_updates.close()  # closes its envs
    runners = last_result.get(ENV_RUNNER_RESULTS, {})
    if experiment.resources.num_env_runners and ENV_STEP_TIMER in runners:
        # The remote runners' own timers, reported with the last iteration: their real device and load.
        remote_ms = {name: 1e3 * functools.reduce(dict.__getitem__, key, runners) for name, key in step_timers}
        print(
            f"          the remote runners' vector step (on {runner_device.type}, mean over runners): "
            + " + ".join(f"{name} {ms:.2f}" for name, ms in remote_ms.items())
            + f" = {sum(remote_ms.values()):.2f} ms, episodes and the rest not included",
            flush=True,
        )
        figures["remote_runner_step_ms"] = {name: round(ms, 2) for name, ms in remote_ms.items()}
    algo.stop()
    lean_rate, train_rate = steps["lean"] / seconds["lean"], steps["harness"] / seconds["harness"]
    rollout_rate = steps["lean"] / sum(lean_sample_s[1:])
    print(
        f"lean rollout {rollout_rate:7.0f} steps/s  ({rollout_rate / env_rate:.0%} of env, "
        f"{rollout_rate / sampling_bound:.0%} of the ceiling; "
        "the lean PPO's sampling with inference, for comparison with 'sampling' above)"
    )
    print(f"lean      {lean_rate:10.1f} steps/s  (benchmarks/{lean.__name__}.py, same env, network, hyperparameters)")
    print(f"training  {train_rate:10.1f} steps/s  (RLlib algo.train())")
    if asynchronous:
        print("ratio     none: the lean reference is synchronous, the harness asynchronous")
    else:
        print(f"ratio     {train_rate / lean_rate:10.2f} x      harness training / lean")
    sys.stdout.flush()
    figures |= {
        "lean_rollout_steps_per_s": round(rollout_rate),
        "lean_ppo_steps_per_s": round(lean_rate, 1),
        "training_steps_per_s": round(train_rate, 1),
        "ratio": None if asynchronous else round(train_rate / lean_rate, 2),
        "iterations": args.iterations,
        "iteration_s": iteration_s,
    }
    records.write("bench", records.measurement(args.experiment, args.overrides), figures)


if __name__ == "__main__":
    main()
