"""The training entry point every launcher runs: a run directory's experiment in, checkpoints out.

It is the only module that talks to Ray's top-level API. Launchers differ only in where Ray
already runs (`RAY_ADDRESS`) and where the run directory points; each has written the run's
config.yaml before this runs.

Loop: algo.train() -> count steps ourselves -> report -> checkpoint when due -> stop when a
limit is reached or SIGINT/SIGTERM arrived (the current iteration finishes, a checkpoint is
written, then it exits; a second signal exits at once, see procgen_rl.signals).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from procgen_rl import envvars, registry
from procgen_rl.config import ENV_RUNNER_SLOT, Experiment, load_experiment
from procgen_rl.errors import CheckpointError, ConfigError, UserError
from procgen_rl.procgen import normalized_score
from procgen_rl.quiet import silence_library_banners
from procgen_rl.reporting import AUXILIARY_LOSSES, STEPS_BY_HOST, Reporter, first_number
from procgen_rl.run_dir import RunDir, TrainState, load_state
from procgen_rl.signals import TwoStageStop


@dataclass
class TrainOutcome:
    state: TrainState
    checkpoint: str
    stop_reason: str  # timesteps_total | time_total_s | training_iteration | signal


def rllib_training_args(experiment: Experiment) -> dict[str, Any]:
    """Our hyperparameter names -> RLlib's `.training()` arguments."""
    algo, res = experiment.algorithm, experiment.resources
    return {
        "lr": algo.learning_rate,
        "gamma": algo.gamma,
        "lambda_": algo.gae_lambda,
        "clip_param": algo.clip_coef,
        "entropy_coeff": algo.ent_coef,
        # The paper's (baselines') value loss is 0.5 * squared error, as are our PPO learner's
        # (procgen_rl.learner) and RLlib's APPO/IMPALA losses.
        "vf_loss_coeff": algo.vf_coef,
        "grad_clip": algo.max_grad_norm,
        "grad_clip_by": "global_norm",
        "num_epochs": algo.update_epochs,
        "minibatch_size": algo.minibatch_size // max(1, res.num_learners),
        "train_batch_size_per_learner": algo.train_batch_size // max(1, res.num_learners),
        "use_kl_loss": False,  # the paper's PPO has only the clipped objective
        "ppg": algo.ppg,  # PPG's own settings (procgen_rl.ppg)
    }


def _accepted_training_args(config: Any) -> set[str]:
    """All keyword names `config.training()` takes, including those its parents take via **kwargs."""
    names: set[str] = set()
    for cls in type(config).__mro__:
        if "training" in vars(cls):
            names |= set(inspect.signature(vars(cls)["training"]).parameters)
    return names - {"self", "kwargs"}


def learner_gpus(device: str) -> int:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("resources.learner_device: cuda requested but no GPU is visible")
    return int(device == "cuda" or (device == "auto" and torch.cuda.is_available()))


def build_algorithm_config(experiment: Experiment) -> Any:
    """The RLlib AlgorithmConfig for an experiment (new API stack, batched Procgen env)."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    from procgen_rl.connectors import FramesToModule, SampleActions
    from procgen_rl.env_runner import ProcgenEnvRunner
    from procgen_rl.envs import ENV_NAME, ProcgenVectorEnv, make_rllib_env, rllib_env_config
    from procgen_rl.models import check_model

    silence_library_banners()
    algo, res = experiment.algorithm, experiment.resources
    config_class = registry.resolve("algorithms", algo.name, "algorithm.name")
    module_class = registry.resolve("models", experiment.model.custom_model, "model.custom_model")
    spaces = ProcgenVectorEnv(experiment.env_config, num_envs=1)  # spaces only: no games start
    check_model(
        module_class,
        experiment.model.custom_model_config,
        algo.name,
        spaces.single_observation_space,
        spaces.single_action_space,
    )
    callbacks = [registry.resolve("callbacks", "episode_metrics", "callbacks")]
    callbacks += [registry.resolve("callbacks", name, "callbacks") for name in experiment.callbacks]

    register_env(ENV_NAME, make_rllib_env)
    config = (
        config_class()
        .environment(ENV_NAME, env_config=rllib_env_config(experiment.env_config, algo.gamma, algo.normalize_reward))
        .env_runners(
            num_env_runners=res.num_env_runners,
            num_envs_per_env_runner=experiment.num_envs_per_env_runner,
            num_cpus_per_env_runner=res.num_cpus_per_env_runner,
            custom_resources_per_env_runner={ENV_RUNNER_SLOT: 1} if res.spread_env_runners else {},
            rollout_fragment_length=algo.num_steps,
            gym_env_vectorize_mode="vector_entry_point",
            env_runner_cls=ProcgenEnvRunner,  # a leaner sampling loop (procgen_rl.env_runner)
            # Two batched pieces in place of RLlib's general pipelines (procgen_rl.connectors).
            env_to_module_connector=lambda env, spaces, device: FramesToModule(device=device),
            add_default_connectors_to_env_to_module_pipeline=False,
            module_to_env_connector=lambda env, spaces: SampleActions(),
            add_default_connectors_to_module_to_env_pipeline=False,
        )
        .learners(num_learners=res.num_learners, num_gpus_per_learner=learner_gpus(res.learner_device))
        .rl_module(
            rl_module_spec=RLModuleSpec(module_class=module_class, model_config=experiment.model.custom_model_config)
        )
        .callbacks(callbacks)
        .debugging(seed=experiment.seed)
    )
    if algo.name == "PPO":
        from procgen_rl.learner import ProcgenPPOLearner

        config.learners(learner_class=ProcgenPPOLearner)  # exactly update_epochs x num_minibatches steps
    elif algo.name in ("APPO", "IMPALA"):
        from procgen_rl.async_learners import ProcgenAPPOLearner, ProcgenIMPALALearner

        # RLlib's learner, with a shutdown that lets a run exit 0 (procgen_rl.async_learners)
        config.learners(learner_class={"APPO": ProcgenAPPOLearner, "IMPALA": ProcgenIMPALALearner}[algo.name])
    accepted = _accepted_training_args(config)
    config.training(**{k: v for k, v in rllib_training_args(experiment).items() if k in accepted})
    for section, kwargs in algo.rllib.items():
        method = getattr(config, section, None)
        if not callable(method) or not isinstance(kwargs, dict):
            raise ConfigError(f"algorithm.rllib.{section}: not an AlgorithmConfig section taking a mapping")
        try:
            method(**kwargs)
        except TypeError as err:
            raise ConfigError(f"algorithm.rllib.{section}: {err}") from None
    return config


def sampled(result: dict, key: str) -> int:
    """An iteration's env-runner count (`num_env_steps_sampled`, `num_episodes`). An asynchronous
    (APPO) iteration may end before samples arrive: RLlib then omits the key, or reports NaN once
    earlier iterations had samples. Both count as 0."""
    value = first_number(result.get("env_runners", {}).get(key))
    return 0 if math.isnan(value) else int(value)


def iteration_metrics(
    result: dict, state: TrainState, experiment: Experiment, seconds: float, steps: int
) -> dict[str, float]:
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    reward_mean = first_number(runners.get("raw_episode_return_mean"))
    env = experiment.env_config
    auxiliary = {key: first_number(learner.get(key)) for key in AUXILIARY_LOSSES}
    return {
        "iteration": state.iteration,
        "timesteps_total": state.timesteps_total,
        "episodes_total": state.episodes_total,
        "episode_reward_mean": reward_mean,
        "episode_reward_min": first_number(runners.get("raw_episode_return_min")),
        "episode_reward_max": first_number(runners.get("raw_episode_return_max")),
        "episode_len_mean": first_number(runners.get("raw_episode_len_mean")),
        "normalized_score": normalized_score(reward_mean, env.env_name, env.distribution_mode),
        "steps_per_s": steps / seconds if seconds > 0 else math.nan,
        "time_total_s": state.time_total_s,
        "policy_loss": first_number(learner.get("policy_loss")),
        "vf_loss": first_number(learner.get("vf_loss")),
        "entropy": first_number(learner.get("entropy")),
        **{key: value for key, value in auxiliary.items() if not math.isnan(value)},
    }


def stop_reason(experiment: Experiment, state: TrainState, last_iteration_s: float = 0.0) -> str | None:
    """The first stop limit reached, or None; 0 disables a limit.

    The wall-time limit is a bound, not a target: training stops before an iteration that, at
    the pace of the last one, would end past it (an iteration can take minutes on a CPU).
    """
    limits = experiment.stop
    if limits.timesteps_total and state.timesteps_total >= limits.timesteps_total:
        return "timesteps_total"
    if limits.time_total_s and state.time_total_s + last_iteration_s >= limits.time_total_s:
        return "time_total_s"
    if limits.training_iteration and state.iteration >= limits.training_iteration:
        return "training_iteration"
    return None


def eta_seconds(experiment: Experiment, state: TrainState, steps_per_s: float) -> float:
    """Time to the nearest stop limit at the current speed."""
    left = [math.inf]
    if experiment.stop.timesteps_total and steps_per_s > 0:
        left.append((experiment.stop.timesteps_total - state.timesteps_total) / steps_per_s)
    if experiment.stop.time_total_s:
        left.append(experiment.stop.time_total_s - state.time_total_s)
    if experiment.stop.training_iteration and state.iteration:
        per_iteration = state.time_total_s / state.iteration
        left.append((experiment.stop.training_iteration - state.iteration) * per_iteration)
    return max(0.0, min(left))


def init_ray(experiment: Experiment, nodes: int = 1) -> None:
    """Join the cluster in RAY_ADDRESS if a launcher started one, else start a local Ray; then
    wait until `nodes` nodes are alive, so every host gets its env runners.

    A local Ray is one host: it gets an env runner slot per runner, so `spread_env_runners`
    means the same there as on a cluster whose launcher gave each host its slots.
    """
    import ray

    address = os.environ.get(envvars.RAY_ADDRESS)
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    else:
        slots = max(1, experiment.resources.num_env_runners)
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=True,
            logging_level=logging.WARNING,
            resources={ENV_RUNNER_SLOT: slots},
        )
    if nodes > 1:
        wait_for_nodes(nodes, NODES_JOIN_TIMEOUT_S)


def report_env_runner_health(algo: Any, experiment: Experiment, previously: int) -> int:
    """Say when remote env runners are lost or come back; training goes on with the healthy ones.

    RLlib drops a failed env runner (its node died, say) from sampling and restarts it when the
    cluster has room for it again.
    """
    if not experiment.resources.num_env_runners:
        return 0
    healthy = algo.env_runner_group.num_healthy_remote_workers()
    if healthy != previously:
        change = "lost" if healthy < previously else "regained"
        print(
            f"env runners: {change} {abs(previously - healthy)}; {healthy} of "
            f"{experiment.resources.num_env_runners} healthy, sampling continues on those",
            flush=True,
        )
    return healthy


NODES_JOIN_TIMEOUT_S = 300  # hosts of one job start within seconds of each other; this is generous


def wait_for_nodes(count: int, timeout_s: float) -> None:
    """Block until `count` Ray nodes are alive, so every host gets its env runners."""
    import ray

    deadline = time.time() + timeout_s
    while (alive := len([n for n in ray.nodes() if n["Alive"]])) < count:
        if time.time() > deadline:
            raise UserError(f"only {alive} of {count} Ray nodes joined within {timeout_s:.0f} s")
        time.sleep(1)
    print(f"Ray cluster: {count} nodes joined", flush=True)


def train(experiment: Experiment, run: RunDir, resume: bool, nodes: int = 1) -> TrainOutcome:
    """Train until a stop limit or a signal; returns the final state and checkpoint.

    The run is locked first, so a second trainer of it fails at once. `nodes`: the Ray nodes
    to wait for before building the algorithm (a multi-host job).
    """
    with run.lock():
        config = build_algorithm_config(experiment)  # user errors surface here, before Ray starts
        checkpoint = run.latest_checkpoint() if resume else None
        if resume and checkpoint is None:
            raise UserError(f"{run.path}: nothing to resume, no complete checkpoint in {run.checkpoints_path}")
        state = load_state(checkpoint) if checkpoint else TrainState()
        outcome = _train_locked(experiment, run, config, checkpoint, state, nodes)
    run.stopped_path.write_text(
        json.dumps(
            {"stop_reason": outcome.stop_reason, "checkpoint": outcome.checkpoint, **asdict(outcome.state)}, indent=2
        )
    )
    return outcome


def train_run_dir(path: Path, nodes: int = 1) -> TrainOutcome:
    """Train the experiment a launcher wrote to `path`/config.yaml: resume when it has checkpoints."""
    run = RunDir(path)
    experiment = load_experiment(run.config_path)
    return train(experiment, run, resume=bool(run.checkpoints()), nodes=nodes)


def _train_locked(
    experiment: Experiment, run: RunDir, config: Any, checkpoint: Any, state: TrainState, nodes: int
) -> TrainOutcome:
    from procgen_rl.progress import Heartbeat  # a Ray actor: imports Ray

    print(f"starting Ray and {experiment.resources.num_env_runners or 'no remote'} env runner(s)", flush=True)
    init_ray(experiment, nodes)
    algo = config.build_algo()
    if checkpoint:
        try:
            algo.restore_from_path(str(checkpoint.resolve()))
        except Exception as err:  # pickle, torch and RLlib raise many types for a damaged file
            algo.stop()
            raise CheckpointError(f"{checkpoint}: cannot restore ({type(err).__name__}: {err})") from None
        print(f"resumed {checkpoint} at iteration {state.iteration}, {state.timesteps_total:,} steps", flush=True)
    run.stopped_path.unlink(missing_ok=True)  # training again: interrupted until it stops cleanly
    reporter = Reporter(str(run.path))
    reason = stop_reason(experiment, state)
    last_saved = checkpoint
    healthy = experiment.resources.num_env_runners

    def finish_iteration(name: str) -> None:
        print(
            f"\n{name}: finishing this iteration, then checkpointing (send again to exit without a checkpoint)",
            flush=True,
        )

    try:
        with TwoStageStop(finish_iteration) as signals, Heartbeat(experiment.algorithm.train_batch_size) as heartbeat:
            while reason is None:
                started = time.time()
                heartbeat.start_iteration(state.iteration + 1)
                result = algo.train()
                seconds = time.time() - started
                runners = result.get("env_runners", {})
                steps = sampled(result, "num_env_steps_sampled")
                state.iteration += 1
                state.timesteps_total += steps
                state.time_total_s += seconds
                state.episodes_total += sampled(result, "num_episodes")
                metrics = iteration_metrics(result, state, experiment, seconds, steps)
                reporter.report(
                    metrics, experiment.stop.timesteps_total, eta_seconds(experiment, state, metrics["steps_per_s"])
                )
                reporter.report_hosts(runners.get(STEPS_BY_HOST, {}), run.steps_by_host_path, state.timesteps_total)
                healthy = report_env_runner_health(algo, experiment, healthy)
                reason = stop_reason(experiment, state, seconds) or (signals.received and "signal")
                frequency = experiment.checkpoint.frequency
                if reason or (frequency and state.iteration % frequency == 0):
                    last_saved = run.save_checkpoint(algo.save_to_path, state, experiment.checkpoint.keep)
    finally:
        reporter.close()
        algo.stop()
    return TrainOutcome(state, str(last_saved), reason)
