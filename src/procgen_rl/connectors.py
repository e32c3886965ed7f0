"""The env runners' two connector pieces: frames into the model, actions out to the env.

RLlib's default env-to-module and module-to-env pipelines serve every case: recurrent state and
time ranks, multi-agent mapping, action unsquashing and clipping, with the data moved one env at
a time through eleven pieces. A Procgen model is stateless, single-agent and Discrete, so each
vector step needs two things: the newest frame of every env as one uint8 batch, and actions
sampled from the model's distribution. These two pieces do only that, batched, and sample
exactly what RLlib's pipelines sample (`benchmarks/bench_env_runner.py` times them). The
learner's pipeline stays RLlib's. `procgen_rl.env_runner` samples its fragments without the
pipelines: it hands the env's frames to the model itself and calls `sample_actions`; the pieces
serve the first frames after a reset and whole-episode sampling.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns


class FramesToModule(ConnectorV2):
    """Env to module: each env's newest frame, stacked into one uint8 tensor on the model's device."""

    def __init__(self, *args: Any, device: torch.device | str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = device

    def __call__(self, *, episodes: list, **kwargs: Any) -> dict[str, torch.Tensor]:
        frames = torch.from_numpy(np.stack([episode.get_observations(-1) for episode in episodes]))
        return {Columns.OBS: frames.to(self.device)}  # device None: stays on the CPU


def sample_actions(rl_module: Any, outputs: dict[str, torch.Tensor], explore: bool | None) -> dict[str, np.ndarray]:
    """Actions and their log-probabilities from the model's own distribution class (greedy when
    not exploring), every output as a numpy batch. The outputs come to the CPU before sampling: on
    a GPU that is two small copies (logits, values) in place of sampling kernels there and four
    copies of the results, each waiting for the GPU."""
    outputs = {column: value.cpu() for column, value in outputs.items()}
    if Columns.ACTIONS not in outputs:  # a model may sample its own actions, as RLlib allows
        if explore:
            dist = rl_module.get_exploration_action_dist_cls().from_logits(outputs[Columns.ACTION_DIST_INPUTS])
        else:
            dist = (
                rl_module.get_inference_action_dist_cls()
                .from_logits(outputs[Columns.ACTION_DIST_INPUTS])
                .to_deterministic()
            )
        outputs[Columns.ACTIONS] = dist.sample()
        outputs[Columns.ACTION_LOGP] = dist.logp(outputs[Columns.ACTIONS])
    return {column: value.numpy() for column, value in outputs.items()}


class SampleActions(ConnectorV2):
    """Module to env: `sample_actions`, for the batch the env runner indexes per env."""

    def __call__(
        self, *, rl_module: Any, batch: dict[str, torch.Tensor], explore: bool | None = None, **kwargs: Any
    ) -> dict[str, np.ndarray]:
        return sample_actions(rl_module, batch, explore)
