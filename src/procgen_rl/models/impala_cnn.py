"""IMPALA-CNN (Espeholt et al. 2018) as used by the Procgen paper: depths 16, 32, 32, 256 hidden.

Each stack: conv 3x3 -> max-pool 3x3 stride 2 -> two residual blocks (relu, conv, relu, conv).
Frames arrive as uint8 and are scaled to [0, 1] here, the only place they become float.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS, TargetNetworkAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule


VALUE_CHUNK = 1024  # frames per no-grad value pass: bounds memory at ~0.3 GB of activations


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ConvSequence(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.MaxPool2d(3, stride=2, padding=1),
            ResidualBlock(out_channels),
            ResidualBlock(out_channels),
        )


def impala_encoder(in_shape: tuple[int, int, int], depths: list[int], hidden: int) -> nn.Sequential:
    """Frames (N, C, H, W) in [0, 1] -> features (N, hidden)."""
    channels, height, width = in_shape
    layers: list[nn.Module] = []
    for depth in depths:
        layers.append(ConvSequence(channels, depth))
        channels, height, width = depth, (height + 1) // 2, (width + 1) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.ReLU(), nn.Linear(channels * height * width, hidden), nn.ReLU())


class ImpalaCNN(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI):
    """Shared IMPALA-CNN torso with a policy head (logits) and a value head."""

    def setup(self) -> None:
        depths = self.model_config.get("depths", [16, 32, 32])
        hidden = self.model_config.get("hidden", 256)
        self.encoder = impala_encoder(self.observation_space.shape, depths, hidden)
        self.pi = nn.Linear(hidden, self.action_space.n)
        self.vf = nn.Linear(hidden, 1)
        # Small policy init keeps early actions near uniform (as in CleanRL's ppo_procgen).
        nn.init.orthogonal_(self.pi.weight, gain=0.01)
        nn.init.zeros_(self.pi.bias)

    def _features(self, batch: dict[str, Any], encoder: nn.Module) -> torch.Tensor:
        return encoder(batch[Columns.OBS].float() / 255.0)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self._features(batch, self.encoder))}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self._features(batch, self.encoder)
        return {Columns.ACTION_DIST_INPUTS: self.pi(features), Columns.EMBEDDINGS: features}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """Values; with `embeddings` (the losses pass them) gradients flow through.

        Without them this is RLlib's GAE connector evaluating the whole train batch, which it
        does with autograd on: at 16,384 frames that kept ~14 GB of activations. Here it is
        evaluated without gradients, VALUE_CHUNK frames at a time.
        """
        if embeddings is not None:
            return self.vf(embeddings).squeeze(-1)
        obs = batch[Columns.OBS]
        with torch.no_grad():
            return torch.cat([self.vf(self._features({Columns.OBS: chunk}, self.encoder)).squeeze(-1)
                              for chunk in obs.split(VALUE_CHUNK)])

    def make_target_networks(self) -> None:
        self._target_encoder = make_target_network(self.encoder)
        self._target_pi = make_target_network(self.pi)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self._target_encoder), (self.pi, self._target_pi)]

    def forward_target(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: self._target_pi(self._features(batch, self._target_encoder))}


MODEL = ImpalaCNN
