"""Lean PPG: the reference the harness's PPG is measured against, CleanRL-style in one file.

What benchmarks/lean_ppo.py is for PPO, built from its pieces (the rollouts, GAE, the minibatch
loss, the gradient step): one process, no Ray, the harness's env, its PPG network
(`PhasicImpalaCNNNet`: separate policy and value IMPALA-CNNs, an auxiliary value head on the
policy's), its auxiliary loss (`procgen_rl.ppg.auxiliary_loss`) and the experiment YAML's
hyperparameters. The algorithm is CleanRL's ppg_procgen.py with the paper's separate networks:
phases of n_iteration PPO iterations (advantages standardized over each batch, e_policy epochs
of the surrogate and e_value of the value loss), then e_aux epochs over all the phase's frames
(kept as uint8) of the auxiliary value loss + beta_clone x KL to the policy before the
auxiliary phase + the value loss, in minibatches of num_aux_rollouts x num_steps frames; one
Adam for both phases.

Usage: python benchmarks/lean_ppg.py experiments/ppg-8m.yaml --total-timesteps 100000 --csv lean.csv
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch

import lean_ppo
from lean_ppo import gradient_step, minibatch_losses
from procgen_rl.config import Experiment, PhasicConfig
from procgen_rl.models.impala_cnn import VALUE_CHUNK
from procgen_rl.models.ppg_impala_cnn import PhasicImpalaCNNNet
from procgen_rl.ppg import auxiliary_loss
from procgen_rl.reporting import AUXILIARY_LOSSES

NET = PhasicImpalaCNNNet  # the network this file trains (bench.py times its inference)


@dataclass
class Args(lean_ppo.Args):
    """lean_ppo's Args with PPG's settings, the experiment's `algorithm.ppg` (update_epochs goes unused)."""

    ppg: PhasicConfig = dataclasses.field(default_factory=PhasicConfig)

    def describe(self) -> str:
        ppg = self.ppg
        return (
            f"{self.num_envs} envs x {self.num_steps} steps, phases of {ppg.n_iteration} iterations "
            f"({ppg.e_policy} policy and {ppg.e_value} value epochs of {self.num_minibatches} minibatches) "
            f"and {ppg.e_aux} auxiliary epochs"
        )


def policy_update(
    net: PhasicImpalaCNNNet, optimizer: torch.optim.Optimizer, args: Args, batch: dict[str, torch.Tensor]
) -> dict[str, float]:
    """A policy iteration's update: e_policy epochs of the surrogate and entropy bonus and e_value
    epochs of the value loss, one loss where both train, on advantages standardized over the batch."""
    ppg, valid, advantages = args.ppg, batch["valid"], batch["advantages"]
    batch["advantages"] = (advantages - advantages[valid].mean()) / (advantages[valid].std(correction=0) + 1e-8)
    for epoch in range(max(ppg.e_policy, ppg.e_value)):
        for idx in torch.randperm(args.batch_size, device=valid.device).split(args.minibatch_size):
            losses = minibatch_losses(net, args, batch, idx, standardize=False)
            terms = []
            if epoch < ppg.e_policy:
                terms.append(losses["policy_loss"] - args.ent_coef * losses["entropy"])
            if epoch < ppg.e_value:
                terms.append(args.vf_coef * losses["vf_loss"])
            gradient_step(net, optimizer, sum(terms), args.max_grad_norm)
    return {key: losses[key].item() for key in ("policy_loss", "vf_loss", "entropy")}


def auxiliary_phase(
    net: PhasicImpalaCNNNet,
    optimizer: torch.optim.Optimizer,
    args: Args,
    frames: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
) -> dict[str, float]:
    """e_aux passes over a phase's frames (uint8, host memory) and value targets, in near-equal
    minibatches of about num_aux_rollouts x num_steps frames, against the policy before the phase."""
    ppg = args.ppg
    with torch.no_grad():
        old_logits = torch.cat([net.pi(net.features(chunk.to(device))).cpu() for chunk in frames.split(VALUE_CHUNK)])
    num_minibatches = max(1, round(ppg.n_iteration * args.batch_size / (ppg.num_aux_rollouts * args.num_steps)))
    for _ in range(ppg.e_aux):
        for rows in torch.randperm(len(frames)).tensor_split(num_minibatches):
            logits, aux_value, value = net.auxiliary(frames[rows].to(device))
            target = targets[rows].to(device)
            losses = auxiliary_loss(logits, old_logits[rows].to(device), aux_value, value, target, ppg.beta_clone)
            gradient_step(net, optimizer, losses["loss"], args.max_grad_norm)
    return {key: losses[key].item() for key in AUXILIARY_LOSSES}


class Phases:
    """lean_ppo's update for PPG: each rollout's policy update, its frames (uint8, host memory)
    and value targets kept, and after the phase's last one the auxiliary phase, whose losses join
    that iteration's record (and whose time its steps/s)."""

    def __init__(self, args: Args) -> None:
        self.capacity = args.ppg.n_iteration * args.batch_size if args.ppg.e_aux else 0
        self.frames: torch.Tensor | None = None  # allocated for the first rollout's frame shape
        self.targets = torch.empty(self.capacity)
        self.held = self.iterations = 0

    def __call__(
        self, net: PhasicImpalaCNNNet, optimizer: torch.optim.Optimizer, args: Args, batch: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        losses = policy_update(net, optimizer, args, batch)
        if not self.capacity:
            return losses
        if self.frames is None:
            self.frames = torch.empty((self.capacity, *batch["obs"].shape[1:]), dtype=torch.uint8)
        valid = batch["valid"]  # the frames of transitions, as the harness's batch holds them
        end = self.held + int(valid.sum())
        self.frames[self.held : end] = batch["obs"][valid].cpu()
        self.targets[self.held : end] = batch["returns"][valid].cpu()
        self.held, self.iterations = end, self.iterations + 1
        if self.iterations < args.ppg.n_iteration:
            return losses
        self.held = self.iterations = 0
        return losses | auxiliary_phase(net, optimizer, args, self.frames[:end], self.targets[:end], valid.device)


def train(experiment: Experiment, args: Args) -> Iterator[dict[str, float]]:
    """Run PPG; yields one record per policy iteration as lean_ppo.train does."""
    return lean_ppo.train(experiment, args, NET, Phases(args))


if __name__ == "__main__":
    lean_ppo.main("PPG", train, Args)
