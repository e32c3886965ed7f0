"""The training entry point every launcher runs: a run directory's experiment in, checkpoints out.

It is the only module that talks to Ray's top-level API. Launchers differ only in where Ray
already runs (`RAY_ADDRESS`) and where the run directory points; each has written the run's
config.yaml before this runs.

Loop: algo.train() -> count steps ourselves -> report -> checkpoint when due -> stop when a
limit is reached or SIGINT/SIGTERM arrived (the current iteration finishes, a checkpoint is
written, then it exits; a second signal, or one before the loop, exits at once, see
procgen_rl.signals).

Two step counts: env steps sampled (the env runners' fragments that reached the driver) and env
steps trained (those the learner updated on, each counted once however many epochs pass over
it; see `trained`). The step budget counts trained steps. A synchronous (PPO) iteration trains on exactly what
it sampled: RLlib's `sample_timeout_s` is off, because a fragment that outlasts it is dropped,
still sampled but neither trained nor counted, and the next round of sampling asks every runner
again, so the iteration trains on more than its batch (docs/architecture.md#step-counts).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from procgen_rl import envvars, evaluation, registry
from procgen_rl.config import ENV_RUNNER_SLOT, Experiment, load_experiment
from procgen_rl.errors import CheckpointError, ConfigError, UserError
from procgen_rl.layout import usable_cpus
from procgen_rl.procgen import normalized_score
from procgen_rl.quiet import silence_library_banners
from procgen_rl.reporting import AUXILIARY_LOSSES, STEPS_BY_HOST, STEPS_TRAINED, Reporter, first_number
from procgen_rl.run_dir import RunDir, TrainState, load_state, writing
from procgen_rl.signals import TwoStageStop

IterationHook = Callable[[dict[str, float]], None]


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
    from procgen_rl.env_runner import HostGPUEnvRunner, ProcgenEnvRunner
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
            num_gpus_per_env_runner=res.num_gpus_per_env_runner,
            custom_resources_per_env_runner={ENV_RUNNER_SLOT: 1} if res.spread_env_runners else {},
            rollout_fragment_length=algo.num_steps,
            sample_timeout_s=None,  # wait for every runner's fragment: see the module docstring
            gym_env_vectorize_mode="vector_entry_point",
            # a leaner sampling loop (procgen_rl.env_runner)
            env_runner_cls=HostGPUEnvRunner if res.infer_on_host_gpu else ProcgenEnvRunner,
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
    if experiment.evaluation.interval:
        config.evaluation(**evaluation.rllib_evaluation_args(experiment))
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


def trained(result: dict) -> int:
    """Env steps the learner trained on this iteration, each counted once, as procgen_rl's PPO
    learner reports them; learners that do not (APPO's, IMPALA's, custom ones) count the steps
    sampled. RLlib's own count adds a batch's steps once per minibatch pass, and for APPO's
    minibatches the whole batch's steps each time: no step count."""
    steps = first_number(result.get("learners", {}).get("__all_modules__", {}).get(STEPS_TRAINED))
    return sampled(result, "num_env_steps_sampled") if math.isnan(steps) else int(steps)


def evaluation_metrics(result: dict, experiment: Experiment) -> dict[str, float]:
    """The eval_* metrics of an iteration that evaluated (procgen_rl.evaluation); NaN where an
    evaluation returned nothing (no healthy evaluation runner)."""
    runners = result.get("evaluation", {}).get("env_runners", {})
    env = experiment.env_config
    means = {split: first_number(runners.get(key)) for split, key in evaluation.SPLIT_KEYS.items()}
    scores = {split: normalized_score(mean, env.env_name, env.distribution_mode) for split, mean in means.items()}
    return {
        "eval_train_reward_mean": means["train"],
        "eval_test_reward_mean": means["test"],
        "eval_train_normalized_score": scores["train"],
        "eval_test_normalized_score": scores["test"],
        "eval_generalization_gap": scores["train"] - scores["test"],
    }


def evaluated(experiment: Experiment, state: TrainState) -> bool:
    """Whether the iteration just counted in `state` evaluated: RLlib evaluates iteration N when N
    is a multiple of the interval, and its iteration count resumes with ours."""
    interval = experiment.evaluation.interval
    return bool(interval) and state.iteration % interval == 0


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
        "timesteps_trained": state.timesteps_trained,
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
        **(evaluation_metrics(result, experiment) if evaluated(experiment, state) else {}),
        **{key: value for key, value in auxiliary.items() if not math.isnan(value)},
    }


def stop_reason(experiment: Experiment, state: TrainState, last_iteration_s: float = 0.0) -> str | None:
    """The first stop limit reached, or None; 0 disables a limit.

    The wall-time limit is a bound, not a target: training stops before an iteration that, at
    the pace of the last one, would end past it (an iteration can take minutes on a CPU).
    """
    limits = experiment.stop
    if limits.timesteps_total and state.timesteps_trained >= limits.timesteps_total:
        return "timesteps_total"
    if limits.time_total_s and state.time_total_s + last_iteration_s >= limits.time_total_s:
        return "time_total_s"
    if limits.training_iteration and state.iteration >= limits.training_iteration:
        return "training_iteration"
    return None


def eta_seconds(experiment: Experiment, state: TrainState, trained_per_s: float) -> float:
    """Time to the nearest stop limit at the current speed (env steps trained per second)."""
    left = [math.inf]
    if experiment.stop.timesteps_total and trained_per_s > 0:
        left.append((experiment.stop.timesteps_total - state.timesteps_trained) / trained_per_s)
    if experiment.stop.time_total_s:
        left.append(experiment.stop.time_total_s - state.time_total_s)
    if experiment.stop.training_iteration and state.iteration:
        per_iteration = state.time_total_s / state.iteration
        left.append((experiment.stop.training_iteration - state.iteration) * per_iteration)
    return max(0.0, min(left))


@contextmanager
def stop_signals_left_alone() -> Iterator[None]:
    """ray.init without its two takeovers of this process's SIGTERM.

    ray.init replaces SIGTERM's Python handler with sys.exit(15)
    (https://github.com/ray-project/ray/issues/17308), and the core worker it starts installs
    Abseil's failure handler, which on SIGTERM dumps a stack and arms an abort 3 s later (exit
    134) before passing the signal on (https://github.com/ray-project/ray/pull/64830). Neither
    has a setting for a driver with its own stop handling, so in this process both are skipped
    and the handlers in place stay (procgen_rl.signals); Ray's own processes keep theirs.
    """
    from ray._private import ray_constants, utils

    with (
        mock.patch.object(utils, "set_sigterm_handler", lambda handler: None),
        mock.patch.object(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", True),
    ):
        yield


def init_ray(experiment: Experiment, nodes: int = 1) -> None:
    """Join the cluster in RAY_ADDRESS if a launcher started one, else start a local Ray; then
    wait until `nodes` nodes are alive, so every host gets its env runners.

    A local Ray is one host: it gets an env runner slot per runner, so `spread_env_runners`
    means the same there as on a cluster whose launcher gave each host its slots. Inside a Ray
    worker (a benchmark suite's Tune trial) Ray is already up and the trial's owner sized it.
    """
    import ray

    if ray.is_initialized():
        return
    res = experiment.resources
    start_ray(max(1, res.num_env_runners), res.num_env_runners * res.num_cpus_per_env_runner)
    if nodes > 1:
        wait_for_nodes(nodes, NODES_JOIN_TIMEOUT_S)


def start_ray(slots: int, reserved_cpus: int = 0) -> None:
    """Join RAY_ADDRESS's cluster, else start a local Ray offering `slots` env runner slots and
    the CPUs the layout counted (procgen_rl.layout.usable_cpus), at least the `reserved_cpus`
    the runners reserve (a host smaller than the instance type its job planned with runs them
    crowded instead of waiting)."""
    import ray

    address = os.environ.get(envvars.RAY_ADDRESS)
    with stop_signals_left_alone():
        if address:
            ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
        else:
            ray.init(
                address="local",
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
                num_cpus=max(usable_cpus(), reserved_cpus),
                resources={ENV_RUNNER_SLOT: slots},
            )


def use_learner_threads(experiment: Experiment) -> None:
    """The torch threads of this process, where the learner trains (`resources.learner_threads`)."""
    if experiment.resources.learner_threads:
        import torch

        torch.set_num_threads(experiment.resources.learner_threads)


def build_algo(config: Any) -> Any:
    """The RLlib Algorithm, leaving nothing in the home directory, its evaluating iterations
    training on the caller's thread (procgen_rl.evaluation.evaluate_beside_training).

    An Algorithm is a Tune Trainable, and one built outside Tune makes itself a log directory,
    an empty ~/ray_results/<timestamp>/ (Trainable._setup_logdir), with no setting to move it
    (https://github.com/ray-project/ray/issues/46592). procgen-rl logs into the run directory
    and the RLlib stack it runs writes nothing there, so that directory is a scratch one,
    removed once the Algorithm is built.
    """
    from ray.tune.trainable import trainable

    with tempfile.TemporaryDirectory(prefix="procgen-rl-trainable-") as scratch:
        with mock.patch.object(trainable, "DEFAULT_STORAGE_PATH", scratch):
            algo = config.build_algo()
    evaluation.evaluate_beside_training(algo)
    return algo


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


def train(
    experiment: Experiment, run: RunDir, resume: bool, nodes: int = 1, on_iteration: IterationHook | None = None
) -> TrainOutcome:
    """Train until a stop limit or a signal; returns the final state and checkpoint.

    The run is locked first, so a second trainer of it fails at once. `nodes`: the Ray nodes
    to wait for before building the algorithm (a multi-host job). `on_iteration` gets each
    iteration's metrics (a benchmark suite reports them to Ray Tune).
    """
    with run.lock():
        config = build_algorithm_config(experiment)  # user errors surface here, before Ray starts
        checkpoint = run.latest_checkpoint() if resume else None
        if resume and checkpoint is None:
            raise UserError(f"{run.path}: nothing to resume, no complete checkpoint in {run.checkpoints_path}")
        state = load_state(checkpoint) if checkpoint else TrainState()
        outcome = _train_locked(experiment, run, config, checkpoint, state, nodes, on_iteration)
    stopped = {"stop_reason": outcome.stop_reason, "checkpoint": outcome.checkpoint, **asdict(outcome.state)}
    with writing(run.path, "stopped.json"):
        run.stopped_path.write_text(json.dumps(stopped, indent=2))
    return outcome


def train_run_dir(path: Path, nodes: int = 1, on_iteration: IterationHook | None = None) -> TrainOutcome:
    """Train the experiment a launcher wrote to `path`/config.yaml: resume when it has checkpoints."""
    run = RunDir(path)
    experiment = load_experiment(run.config_path)
    return train(experiment, run, resume=bool(run.checkpoints()), nodes=nodes, on_iteration=on_iteration)


def restore(algo: Any, run: RunDir, checkpoint: Path) -> None:
    """Restore the algorithm's state; a damaged checkpoint is one line naming an older one."""
    try:
        algo.restore_from_path(str(checkpoint.resolve()))
    except Exception as err:  # pickle, torch and RLlib raise many types for a damaged file
        older = [c for c in run.checkpoints() if c.name < checkpoint.name]
        advice = f"resume from an older one: --resume {older[-1]}" if older else "start a new run"
        cause = " ".join(f"{type(err).__name__}: {err}".split())  # one line
        raise CheckpointError(f"{checkpoint}: cannot restore ({cause}); {advice}") from None


def _train_locked(
    experiment: Experiment,
    run: RunDir,
    config: Any,
    checkpoint: Any,
    state: TrainState,
    nodes: int,
    on_iteration: IterationHook | None,
) -> TrainOutcome:
    from procgen_rl.progress import Heartbeat  # a Ray actor: imports Ray

    print(f"starting Ray and {experiment.resources.num_env_runners or 'no remote'} env runner(s)", flush=True)
    use_learner_threads(experiment)

    def stop_when_started(name: str) -> None:
        print(f"\n{name}: stopping once Ray has started (again to exit at once)", flush=True)

    # An exception raised by a signal handler inside Ray's driver calls can crash the process on
    # its way out (a segfault in ray.shutdown), so a stop during start-up is acted on between them.
    with TwoStageStop(stop_when_started) as starting:
        init_ray(experiment, nodes)
        starting.stop_if_received()
        algo = build_algo(config)
        try:
            starting.stop_if_received()
            if checkpoint:
                restore(algo, run, checkpoint)
                print(
                    f"resumed {checkpoint} at iteration {state.iteration}, {state.timesteps_trained:,} steps trained",
                    flush=True,
                )
            starting.stop_if_received()
        except BaseException:
            algo.stop()
            raise
    run.stopped_path.unlink(missing_ok=True)  # training again: interrupted until it stops cleanly
    with writing(run.path, "the metrics"):
        run.rewind_metrics(checkpoint)
        reporter = Reporter(run.path)
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
                steps, steps_trained = sampled(result, "num_env_steps_sampled"), trained(result)
                state.iteration += 1
                state.timesteps_total += steps
                state.timesteps_trained += steps_trained
                state.time_total_s += seconds
                state.episodes_total += sampled(result, "num_episodes")
                metrics = iteration_metrics(result, state, experiment, seconds, steps)
                with writing(run.path, "the metrics"):
                    eta = eta_seconds(experiment, state, steps_trained / seconds)
                    reporter.report(metrics, experiment.stop.timesteps_total, eta)
                    reporter.report_hosts(runners.get(STEPS_BY_HOST, {}), run.steps_by_host_path, state.timesteps_total)
                if on_iteration:
                    on_iteration(metrics)
                healthy = report_env_runner_health(algo, experiment, healthy)
                reason = stop_reason(experiment, state, seconds) or (signals.received and "signal")
                frequency = experiment.checkpoint.frequency
                if reason or (frequency and state.iteration % frequency == 0):
                    last_saved = run.save_checkpoint(algo.save_to_path, state, experiment.checkpoint.keep)
    finally:
        reporter.close()
        algo.stop()
        # RLlib's Algorithm is a Tune Trainable: built outside Tune it makes itself a log
        # directory in ~/ray_results that nothing writes to (the run directory has it all).
        with contextlib.suppress(OSError):
            os.rmdir(algo.logdir)
    return TrainOutcome(state, str(last_saved), reason)
