"""PPG's network arrangement (Cobbe et al. 2021, "dual"): separate policy and value IMPALA-CNNs,
and an auxiliary value head on the policy network.

The policy network is impala_cnn's (torso and policy head); its auxiliary value head learns the
value in PPG's auxiliary phase, so the policy's features learn what predicts returns while the
KL term keeps the policy where it was. The value network is a second torso of the same shape
with its own head, trained by the value loss alone: the policy's gradients never reach it.
Sampling runs both networks (logits and the value GAE needs), so it costs about twice the
inference of impala_cnn. Options as impala_cnn's (depths, hidden, precision, augment).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from torch import nn

from procgen_rl.models import AUX_VF_PREDS
from procgen_rl.models.impala_cnn import ImpalaCNN, ImpalaCNNNet, impala_encoder


class PhasicImpalaCNNNet(ImpalaCNNNet):
    """uint8 frames -> (logits, value), the value from a network of its own: the RLModule's network
    and benchmarks/lean_ppg.py's. `encoder` and `pi` are the policy network, `aux_vf` its
    auxiliary value head; `value_encoder` and `vf` are the value network."""

    def __init__(
        self, obs_shape: tuple[int, int, int], num_actions: int, depths: list[int], hidden: int, precision: str
    ) -> None:
        super().__init__(obs_shape, num_actions, depths, hidden, precision)
        self.value_encoder = impala_encoder(obs_shape, depths, hidden)
        self.aux_vf = nn.Linear(hidden, 1)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as ImpalaCNNNet

    def value_features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.features(obs, self.value_encoder)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pi(self.features(obs)), self.vf(self.value_features(obs)).squeeze(-1)

    def auxiliary(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, auxiliary value, value): what PPG's auxiliary loss reads."""
        features = self.features(obs)
        value = self.vf(self.value_features(obs)).squeeze(-1)
        return self.pi(features), self.aux_vf(features).squeeze(-1), value


class PhasicImpalaCNN(ImpalaCNN):
    """ImpalaCNN with separate policy and value networks and an auxiliary value head.

    `_forward_train` returns the value network's features as `Columns.EMBEDDINGS` (the losses'
    `compute_values` reads the value from them, as in ImpalaCNN) and the auxiliary value as
    `AUX_VF_PREDS`, which PPG's auxiliary loss needs.
    """

    net_class = PhasicImpalaCNNNet
    net: PhasicImpalaCNNNet

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        frames = self.training_frames(batch)
        features = self.net.features(frames)
        return {
            Columns.ACTION_DIST_INPUTS: self.net.pi(features),
            Columns.EMBEDDINGS: self.net.value_features(frames),
            AUX_VF_PREDS: self.net.aux_vf(features).squeeze(-1),
        }


MODEL = PhasicImpalaCNN
