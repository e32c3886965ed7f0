"""The env runner: RLlib's SingleAgentEnvRunner with a leaner loop for sampling timesteps.

RLlib's loop serves any env and any connector pipeline. Per vector step it splits the batched
observations and actions into per-env lists, runs both connector pipelines through their
generic wrappers, switches the module to eval mode and back (36 submodules of the IMPALA-CNN),
and calls every callback object's episode hooks for every env, no-ops included. A Procgen
runner needs none of that: the batched frames go to the model as they come from the env, the
module stays in eval mode (a runner never trains it), actions come from
`procgen_rl.connectors.sample_actions` as in the module-to-env piece, and episode hooks that
no callback implements are skipped. The episodes are RLlib's own, filled by their own
`add_env_reset`/`add_env_step` in RLlib's order, so with the same seed the samples are
identical to RLlib's runner's (`tests/test_env_runner.py`). What it saves is fixed per vector
step, so it weighs most where inference is cheap (`benchmarks/bench_env_runner.py`,
docs/performance.md). Sampling whole episodes or random actions stays RLlib's loop.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.columns import Columns
from ray.rllib.env.env_runner import ENV_STEP_FAILURE
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics import (
    CONNECTOR_PIPELINE_TIMER,
    ENV_TO_MODULE_CONNECTOR,
    MODULE_TO_ENV_CONNECTOR,
    RLMODULE_INFERENCE_TIMER,
    WEIGHTS_SEQ_NO,
)

from procgen_rl.connectors import sample_actions
from procgen_rl.models import without_nan_fill
from procgen_rl.progress import ProgressReporter
from procgen_rl.quiet import silence_library_banners

EPISODE_HOOKS = ("on_episode_created", "on_episode_start", "on_episode_step", "on_episode_end")


class ProcgenEnvRunner(SingleAgentEnvRunner):
    """Samples fragments of timesteps from the batched Procgen env with little per-step Python."""

    _cached_to_module: dict[str, Any]  # RLlib's: the frames the next forward reads
    _ongoing_episodes: list[SingleAgentEpisode]  # RLlib's: one per env

    def __init__(self, **kwargs: Any) -> None:
        silence_library_banners()  # a remote runner is a process of its own
        super().__init__(**kwargs)
        without_nan_fill()
        if self.worker_index:  # a remote runner: as many torch threads as CPUs Ray reserved for it
            torch.set_num_threads(max(1, int(self.config.num_cpus_per_env_runner)))
        # An episode hook runs only where a callback object overrides it or a function is registered.
        self._hooks_in_use = {
            hook: any(getattr(type(callback), hook) is not getattr(RLlibCallback, hook) for callback in self._callbacks)
            or bool(getattr(self.config, f"callbacks_{hook}"))
            for hook in EPISODE_HOOKS
        }
        self._progress = ProgressReporter()

    def make_module(self) -> None:
        super().make_module()
        if self.module is not None:
            self.module.eval()  # sampling never trains; RLlib's forward_exploration would toggle it every step

    def _make_on_episode_callback(self, which: str, idx: int, episodes: list[SingleAgentEpisode]) -> None:
        if self._hooks_in_use[which]:
            super()._make_on_episode_callback(which, idx, episodes)

    def _sample(
        self,
        *,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool,
        random_actions: bool = False,
        force_reset: bool = False,
    ) -> list[SingleAgentEpisode]:
        """At least `num_timesteps` env steps over all envs, as RLlib's `_sample` returns them: the
        episodes finished here, then every ongoing episode's chunk (continued at the next call)."""
        if num_timesteps is None or random_actions:
            return super()._sample(
                num_timesteps=num_timesteps,
                num_episodes=num_episodes,
                explore=explore,
                random_actions=random_actions,
                force_reset=force_reset,
            )
        if force_reset or self._needs_initial_reset:
            self._reset_envs_and_episodes(explore)  # runs the env-to-module piece on the first frames
        frames = self._cached_to_module[Columns.OBS]
        num_runners = self.config.num_env_runners or 1
        timesteps, done_episodes = 0, []
        while timesteps < num_timesteps:
            with self.metrics.log_time(RLMODULE_INFERENCE_TIMER), torch.no_grad():
                if explore:  # t as RLlib's loop passes it: this runner's lifetime steps times the runners
                    t = (self.num_env_steps_sampled_lifetime // num_runners + timesteps) * num_runners
                    outputs = self.module._forward_exploration({Columns.OBS: frames}, t=t)
                else:
                    outputs = self.module._forward_inference({Columns.OBS: frames})
            with self.metrics.log_time((MODULE_TO_ENV_CONNECTOR, CONNECTOR_PIPELINE_TIMER)):
                outputs = sample_actions(self.module, outputs, explore)
            actions = outputs.pop(Columns.ACTIONS)
            results = self._try_env_step(actions)
            if results == ENV_STEP_FAILURE:  # RLlib recreated the env: start over, as its loop does
                timesteps = 0
                self._reset_envs_and_episodes(explore)
                frames = self._cached_to_module[Columns.OBS]
                continue
            observations, rewards, terminateds, truncateds, infos = results
            self._progress.steps(self.num_envs)
            with self.metrics.log_time((ENV_TO_MODULE_CONNECTOR, CONNECTOR_PIPELINE_TIMER)):
                frames = torch.from_numpy(observations).to(self._device)

            episodes, started = self._ongoing_episodes, set()
            for i, episode in enumerate(episodes):
                if not episode.is_reset:  # finished last step: this step's frame is its successor's first
                    episode.add_env_reset(observation=observations[i], infos=infos[i])
                    started.add(i)
                    continue
                timesteps += 1
                extra_model_outputs = {column: value[i] for column, value in outputs.items()}
                extra_model_outputs[WEIGHTS_SEQ_NO] = self._weights_seq_no
                episode.add_env_step(
                    observation=observations[i],
                    action=actions[i],
                    reward=rewards[i],
                    infos=infos[i],
                    terminated=terminateds[i],
                    truncated=truncateds[i],
                    extra_model_outputs=extra_model_outputs,
                )
            for i in range(self.num_envs):
                self._make_on_episode_callback("on_episode_start" if i in started else "on_episode_step", i, episodes)
                if episodes[i].is_done:
                    self._make_on_episode_callback("on_episode_end", i, episodes)
                    done_episodes.append(episodes[i].to_numpy() if self.episodes_to_numpy else episodes[i])
                    self._new_episode(i, episodes)
        self._cached_to_module = {Columns.OBS: frames}
        self._progress.steps(0, flush=True)
        self._done_episodes_for_metrics.extend(done_episodes)
        chunks = self._cut_ongoing_episodes()
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=timesteps)
        self._increase_sampled_metrics(timesteps, len(done_episodes))
        return done_episodes + chunks

    def _cut_ongoing_episodes(self) -> list[SingleAgentEpisode]:
        """Every ongoing episode's chunk so far, as RLlib's loop ends; their continuations sample on."""
        chunks = []
        continuations = [
            episode.cut(len_lookback_buffer=self.config.episode_lookback_horizon) for episode in self._ongoing_episodes
        ]
        for episode in self._ongoing_episodes:
            if episode.t == 0:
                continue  # just started: no data yet
            episode.validate()
            self._ongoing_episodes_for_metrics[episode.id_].append(episode)
            chunks.append(episode.to_numpy() if self.episodes_to_numpy else episode)
        self._ongoing_episodes = continuations
        return chunks


class HostGPUEnvRunner(ProcgenEnvRunner):
    """A runner that infers on a GPU of its host when one is visible, without a share of one from Ray
    (`resources.infer_on_host_gpu`): where GPU and CPU hosts sample together, Ray's GPU shares would
    keep every runner off the CPU hosts. Runners on one host spread over its GPUs by their index."""

    @property
    def _device(self) -> torch.device:
        return self._host_device

    @_device.setter
    def _device(self, device: torch.device) -> None:
        # RLlib sets the CPU here, for want of a Ray GPU share; the env-to-module piece and the
        # module are built on whatever this returns.
        if self.worker_index and torch.cuda.is_available():
            device = torch.device("cuda", (self.worker_index - 1) % torch.cuda.device_count())
        self._host_device = device
