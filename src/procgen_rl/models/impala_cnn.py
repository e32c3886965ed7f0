"""IMPALA-CNN (Espeholt et al. 2018) as used by the Procgen paper: depths 16, 32, 32, 256 hidden.

Each stack: conv 3x3 -> max-pool 3x3 stride 2 -> two residual blocks (relu, conv, relu, conv).
Frames arrive as uint8 and are scaled to [0, 1] here, the only place they become float.
`precision: bf16` runs the encoder under bfloat16 autocast; the heads, the loss and the
optimizer stay float32. On a GPU, the env runners' forward replays a CUDA graph.
`augment: {crop: N}` shifts each training frame by up to N pixels (DrAC's random crop, N = 12
there) in the learner's forward only: sampling, GAE and evaluation see the frames as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS, TargetNetworkAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

VALUE_CHUNK = 1024  # frames per no-grad value pass: bounds the activations held at once
PRECISIONS = ("fp32", "bf16")
MAX_CROP = 32  # pixels: half a frame


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


class ImpalaCNNNet(nn.Module):
    """uint8 frames -> (logits, value): the one network of the RLModule and benchmarks/lean_ppo.py."""

    def __init__(
        self, obs_shape: tuple[int, int, int], num_actions: int, depths: list[int], hidden: int, precision: str
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        # bfloat16 keeps float32's exponent range, so the loss needs no scaling. It pays only
        # where the hardware computes in it (a CPU with AVX512-BF16, a recent GPU).
        self.bf16 = precision == "bf16"
        self.encoder = impala_encoder(obs_shape, depths, hidden)
        self.pi = nn.Linear(hidden, num_actions)
        self.vf = nn.Linear(hidden, 1)
        # Small policy init keeps early actions near uniform (as in CleanRL's ppo_procgen).
        nn.init.orthogonal_(self.pi.weight, gain=0.01)
        nn.init.zeros_(self.pi.bias)
        # channels_last (NHWC) is oneDNN's native conv layout, much faster on a CPU than NCHW.
        # Layout only: values and state dicts are unchanged.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it

    @classmethod
    def from_model_config(cls, obs_shape: tuple[int, int, int], num_actions: int, model_config: dict) -> ImpalaCNNNet:
        """The network an experiment's `custom_model_config` describes; the paper's sizes where it is silent."""
        return cls(
            obs_shape,
            num_actions,
            model_config.get("depths", [16, 32, 32]),
            model_config.get("hidden", 256),
            model_config.get("precision", "fp32"),
        )

    def features(self, obs: torch.Tensor, encoder: nn.Module | None = None) -> torch.Tensor:
        frames = obs.contiguous(memory_format=torch.channels_last).float() / 255.0
        # No cast cache: each weight is cast once per forward anyway, and a CUDA graph needs none.
        with torch.autocast(frames.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            return (encoder or self.encoder)(frames).float()

    def value_features(self, obs: torch.Tensor) -> torch.Tensor:
        """The features the value head reads: the shared torso's here."""
        return self.features(obs)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(obs)
        return self.pi(features), self.vf(features).squeeze(-1)

    @torch.no_grad()
    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """Values without gradients, VALUE_CHUNK frames at a time (bounded activation memory)."""
        return torch.cat([self.vf(self.value_features(chunk)).squeeze(-1) for chunk in obs.split(VALUE_CHUNK)])


def crop_padding(model_config: dict) -> int:
    """The pixels `augment: {crop: N}` shifts training frames by; 0 when augmentation is off."""
    augment = model_config.get("augment") or {}
    pad = augment.get("crop", 0) if isinstance(augment, dict) and set(augment) <= {"crop"} else None
    if not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad <= MAX_CROP:
        raise ValueError(f"augment {augment!r} is not {{crop: N}} with N in [0, {MAX_CROP}] pixels, e.g. {{crop: 12}}")
    return pad


def random_crop(frames: torch.Tensor, pad: int) -> torch.Tensor:
    """Each frame shifted by up to `pad` pixels along each axis, its edge pixels repeated: DrAC's
    random crop (replicate-pad by `pad`, crop back to the frame's size at a random offset), as
    indices into the uint8 frames, without the padded copy."""
    n, _, height, width = frames.shape
    shift = torch.randint(-pad, pad + 1, (n, 2, 1), device=frames.device)
    rows = (torch.arange(height, device=frames.device) + shift[:, 0]).clamp(0, height - 1)
    cols = (torch.arange(width, device=frames.device) + shift[:, 1]).clamp(0, width - 1)
    batch = torch.arange(n, device=frames.device)[:, None, None]
    # Indexing around the channel slice puts the channels last: (n, h, w, c) -> (n, c, h, w).
    return frames[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class CUDAGraphForward:
    """A network's forward without gradients, replayed as one CUDA graph per input shape on a GPU;
    frames on the CPU run the plain forward.

    At an env runner's batch (a few to a few dozen frames) the IMPALA-CNN's forward is some 40
    small kernels, and launching them one by one from Python costs more than running them; with
    several runners and the learner sharing one GPU, the launches queue. A graph launches them
    all at once.
    Replays read the parameters where they are, and RLlib's weight sync copies into them in
    place (`load_state_dict`), so every replay uses the newest weights.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.graphs: dict[torch.Size, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not obs.is_cuda:
            return self.net(obs)
        if obs.shape not in self.graphs:
            self.graphs[obs.shape] = self._capture(obs)
        graph, static_obs, static_out = self.graphs[obs.shape]
        static_obs.copy_(obs)
        graph.replay()
        return tuple(out.clone() for out in static_out)  # the next replay overwrites static_out

    def _capture(self, obs: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]:
        static_obs = obs.clone()
        side = torch.cuda.Stream(obs.device)  # warm-up off the default stream, as capture requires
        side.wait_stream(torch.cuda.current_stream(obs.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.net(static_obs)
        torch.cuda.current_stream(obs.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.net(static_obs)
        return graph, static_obs, static_out


class ImpalaCNN(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI):
    """Shared IMPALA-CNN torso with a policy head (logits) and a value head."""

    net_class: type[ImpalaCNNNet] = ImpalaCNNNet

    def setup(self) -> None:
        self.net = self.net_class.from_model_config(
            self.observation_space.shape, self.action_space.n, self.model_config
        )
        self._graphed_net = CUDAGraphForward(self.net)
        self.crop = crop_padding(self.model_config)

    def training_frames(self, batch: dict[str, Any]) -> torch.Tensor:
        """The frames a learner trains on: randomly cropped when `augment` asks for it."""
        return random_crop(batch[Columns.OBS], self.crop) if self.crop else batch[Columns.OBS]

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.net.pi(self.net.features(batch[Columns.OBS]))}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Sampling also keeps the values (one more linear layer): GAE then skips its own pass."""
        logits, values = self._graphed_net(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.VF_PREDS: values}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self.net.features(self.training_frames(batch))
        return {Columns.ACTION_DIST_INPUTS: self.net.pi(features), Columns.EMBEDDINGS: features}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """Values; with `embeddings` (the losses pass them) gradients flow through.

        Without them this is RLlib's GAE connector, which would evaluate the whole train batch
        with autograd on and in one piece: activations for every frame at once. The env runner
        already stored each sampled frame's value (`_forward_exploration`, same weights in
        synchronous PPO), so only the bootstrap frames RLlib appends to each episode chunk
        (LOSS_MASK False) are evaluated here, a small share of the batch, without gradients,
        in chunks.
        """
        if embeddings is not None:
            return self.net.vf(embeddings).squeeze(-1)
        obs = batch[Columns.OBS]
        if Columns.VF_PREDS not in batch or Columns.LOSS_MASK not in batch:
            return self.net.values(obs)
        values = batch[Columns.VF_PREDS].clone()
        bootstrap = ~batch[Columns.LOSS_MASK]
        values[bootstrap] = self.net.values(obs[bootstrap])
        return values

    def make_target_networks(self) -> None:
        self._target_encoder = make_target_network(self.net.encoder)
        self._target_pi = make_target_network(self.net.pi)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.net.encoder, self._target_encoder), (self.net.pi, self._target_pi)]

    def forward_target(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self.net.features(batch[Columns.OBS], self._target_encoder)
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: self._target_pi(features)}


MODEL = ImpalaCNN
