"""Lean PPO: the reference the RLlib harness is measured against, CleanRL-style in one file.

One process, no Ray: ProcgenVectorEnv (the harness's env) feeds the IMPALA-CNN (the harness's
network, `ImpalaCNNNet`), with the experiment YAML's hyperparameters, so a speed gap between
the two is the harness's overhead, not a different problem. The PPO is the Procgen paper's
(OpenAI baselines ppo2): clipped surrogate, clipped value loss, entropy bonus, global-norm
gradient clipping, advantages normalized per minibatch, constant learning rate.

Usage: python benchmarks/lean_ppo.py experiments/ppo-8m.yaml --total-timesteps 100000 --csv lean.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from procgen_rl.callbacks.episode_metrics import WINDOW
from procgen_rl.config import Experiment, load_experiment, parse_set_args
from procgen_rl.envs import EPISODE_RETURN, ProcgenVectorEnv
from procgen_rl.learner import ADAM_EPSILON, paper_ppo_loss
from procgen_rl.models.impala_cnn import ImpalaCNNNet
from procgen_rl.trainer import learner_gpus

NET = ImpalaCNNNet  # the network this file trains (bench.py times its inference)
# What the command line prints of an iteration's record: PPO's losses, and PPG's auxiliary ones.
LOSS_LABELS = {"policy_loss": "pg", "vf_loss": "vf", "entropy": "ent", "aux_value_loss": "aux", "aux_kl": "kl"}


@dataclass
class Args:
    """The paper's hyperparameter names; `from_experiment` fills them from the YAML."""

    learning_rate: float
    gamma: float
    gae_lambda: float
    clip_coef: float
    ent_coef: float
    vf_coef: float
    max_grad_norm: float
    update_epochs: int
    num_minibatches: int
    num_envs: int
    num_steps: int
    normalize_reward: bool
    total_timesteps: int
    seed: int = 0
    torch_threads: int = 0  # 0 = torch's default (one per core)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    def describe(self) -> str:
        return (
            f"{self.num_envs} envs x {self.num_steps} steps, {self.update_epochs} epochs, "
            f"{self.num_minibatches} minibatches"
        )

    @classmethod
    def from_experiment(cls, experiment: Experiment, **extra: int) -> Args:
        """The experiment's values; `extra` (e.g. total_timesteps, torch_threads) overrides them."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in vars(experiment.algorithm).items() if k in names}
        values |= {"total_timesteps": experiment.stop.timesteps_total, "seed": experiment.seed}
        return cls(**(values | extra))


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """Generalized advantage estimates for a (T, N) rollout of N envs.

    `values[t]` is V(obs_t); `next_values` is V(obs_T), the bootstrap after the last step.
    With NEXT_STEP autoreset, the obs after a finished step is that episode's final frame, so
    V(obs_{t+1}) bootstraps a truncated episode and is dropped for a terminated one; no
    advantage flows back across a finished step (the following reset step is no transition).
    """
    advantages = np.zeros_like(rewards, dtype=np.float32)
    following = np.zeros(rewards.shape[1], np.float32)
    for t in reversed(range(len(rewards))):
        bootstrap = next_values if t == len(rewards) - 1 else values[t + 1]
        delta = rewards[t] + gamma * bootstrap * (1.0 - terminated[t]) - values[t]
        following = delta + gamma * lam * (1.0 - (terminated[t] | truncated[t])) * following
        advantages[t] = following
    return advantages


def minibatch_losses(
    net: nn.Module, args: Args, batch: dict[str, torch.Tensor], idx: torch.Tensor, standardize: bool = True
) -> dict[str, torch.Tensor]:
    """The harness's loss (`paper_ppo_loss`) on the minibatch's valid rows: a step that only reset
    a finished env is not a transition. Advantages are standardized per minibatch unless
    `standardize` is off (the caller standardized the whole batch)."""
    idx = idx[batch["valid"][idx]]
    logits, value = net(batch["obs"][idx])
    dist = Categorical(logits=logits)
    return paper_ppo_loss(
        logp_ratio=(dist.log_prob(batch["actions"][idx]) - batch["logprobs"][idx]).exp(),
        advantages=batch["advantages"][idx],
        entropy=dist.entropy(),
        value=value,
        old_value=batch["values"][idx],
        target=batch["returns"][idx],
        clip_coef=args.clip_coef,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        standardize_advantages=standardize,
    )


def gradient_step(net: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float) -> None:
    """One Adam step on `loss`, gradients clipped to a global norm; parameters the loss does not
    reach keep no gradient, so Adam leaves them alone."""
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
    optimizer.step()


def ppo_update(
    net: nn.Module, optimizer: torch.optim.Optimizer, args: Args, batch: dict[str, torch.Tensor]
) -> dict[str, float]:
    """`update_epochs` passes of `num_minibatches` clipped-PPO steps over a flattened rollout."""
    for _ in range(args.update_epochs):
        for idx in torch.randperm(args.batch_size, device=batch["obs"].device).split(args.minibatch_size):
            losses = minibatch_losses(net, args, batch, idx)
            gradient_step(net, optimizer, losses["loss"], args.max_grad_norm)
    return {key: losses[key].item() for key in ("policy_loss", "vf_loss", "entropy")}


class Rollouts:
    """The envs and the rollout storage: `collect` steps every env `num_steps` times with the
    network's actions and returns the flattened batch with GAE's advantages and returns.

    Storage stays uint8 in host memory; the batch goes to the network's device. `returns` holds
    the last WINDOW episodes' returns, the harness's `episode_reward_mean`.
    """

    def __init__(self, experiment: Experiment, args: Args, device: torch.device) -> None:
        self.args, self.device = args, device
        self.envs = ProcgenVectorEnv(
            experiment.env_config, args.num_envs, normalize_reward_gamma=args.gamma if args.normalize_reward else None
        )
        shape = (args.num_steps, args.num_envs)
        self.obs = torch.zeros(shape + self.envs.single_observation_space.shape, dtype=torch.uint8)
        self.actions, self.logprobs = torch.zeros(shape, dtype=torch.long), torch.zeros(shape)
        self.values, self.rewards = torch.zeros(shape), np.zeros(shape, np.float32)
        self.terminated, self.truncated = np.zeros(shape, bool), np.zeros(shape, bool)
        self.restarting = np.zeros(shape, bool)
        self.next_obs = torch.from_numpy(self.envs.reset(seed=args.seed)[0])
        self.next_restarting = np.zeros(args.num_envs, bool)  # the next step only resets these envs
        self.returns: deque[float] = deque(maxlen=WINDOW)

    def collect(self, net: ImpalaCNNNet) -> tuple[dict[str, torch.Tensor], int]:
        """One rollout: the batch (on the device) and the number of episodes that ended in it."""
        args, episodes = self.args, 0
        for t in range(args.num_steps):
            self.obs[t], self.restarting[t] = self.next_obs, self.next_restarting
            with torch.no_grad():
                logits, value = net(self.next_obs.to(self.device))
            dist = Categorical(logits=logits)
            action = dist.sample()
            self.actions[t], self.logprobs[t], self.values[t] = action.cpu(), dist.log_prob(action).cpu(), value.cpu()
            frames, self.rewards[t], self.terminated[t], self.truncated[t], info = self.envs.step(
                self.actions[t].numpy()
            )
            self.next_obs, self.next_restarting = torch.from_numpy(frames), self.terminated[t] | self.truncated[t]
            if EPISODE_RETURN in info:
                finished = info[EPISODE_RETURN][info[f"_{EPISODE_RETURN}"]]
                self.returns.extend(finished.tolist())
                episodes += len(finished)
        advantages = gae(
            self.rewards,
            self.values.numpy(),
            net.values(self.next_obs.to(self.device)).cpu().numpy(),
            self.terminated,
            self.truncated,
            args.gamma,
            args.gae_lambda,
        )
        batch = {
            "obs": self.obs.flatten(0, 1),
            "actions": self.actions.flatten(),
            "logprobs": self.logprobs.flatten(),
            "values": self.values.flatten(),
            "advantages": torch.from_numpy(advantages).flatten(),
            "valid": torch.from_numpy(~self.restarting).flatten(),
        }
        batch = {key: column.to(self.device) for key, column in batch.items()}
        batch["returns"] = batch["advantages"] + batch["values"]
        return batch, episodes

    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    def close(self) -> None:
        self.envs.close()


def setup(experiment: Experiment, args: Args, net_class: type[ImpalaCNNNet]) -> tuple[ImpalaCNNNet, Any, Rollouts]:
    """Seeds, then the network where the harness's learner would run it
    (`resources.learner_device`), its Adam and the rollouts."""
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device("cuda" if learner_gpus(experiment.resources.learner_device) else "cpu")
    rollouts = Rollouts(experiment, args, device)
    envs = rollouts.envs
    net = net_class.from_model_config(
        envs.single_observation_space.shape, int(envs.single_action_space.n), experiment.model.custom_model_config
    ).to(device)
    return net, torch.optim.Adam(net.parameters(), lr=args.learning_rate, eps=ADAM_EPSILON), rollouts


Update = Callable[[Any, torch.optim.Optimizer, Any, dict[str, torch.Tensor]], dict[str, float]]


def train(
    experiment: Experiment, args: Args, net_class: type[ImpalaCNNNet] = NET, update: Update = ppo_update
) -> Iterator[dict[str, float]]:
    """Run PPO (or another `update` of a `net_class` network on each rollout); yields one record
    per rollout+update: steps so far, steps/s, and the mean return of the last WINDOW episodes,
    the harness's `episode_reward_mean`."""
    net, optimizer, rollouts = setup(experiment, args, net_class)
    step = 0
    try:
        while step < args.total_timesteps:
            started = time.perf_counter()
            batch, episodes = rollouts.collect(net)
            step += args.batch_size
            sampled = time.perf_counter()
            losses = update(net, optimizer, args, batch)
            yield iteration_record(step, args, started, sampled, episodes, rollouts, losses)
    finally:
        rollouts.close()


def iteration_record(
    step: int, args: Args, started: float, sampled: float, episodes: int, rollouts: Rollouts, losses: dict[str, float]
) -> dict[str, float]:
    """What an iteration yields: steps so far, steps/s, its rollout's and update's seconds, the
    episodes that ended, the mean return, the losses."""
    seconds = time.perf_counter() - started
    return {
        "step": step,
        "steps_per_s": args.batch_size / seconds,
        "sample_s": sampled - started,
        "update_s": seconds - (sampled - started),
        "episodes": episodes,
        "mean_return": rollouts.mean_return(),
        **losses,
    }


def main(
    algorithm: str = "PPO", run: Callable[[Experiment, Any], Iterator[dict]] = train, args_class: type = Args
) -> None:
    """The command line of a lean trainer: this file's PPO, or `run` with its `args_class`."""
    parser = argparse.ArgumentParser(
        description=f"Lean {algorithm}: the reference the RLlib harness is measured against"
    )
    parser.add_argument("experiment")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--total-timesteps", type=int, default=0, help="default: the experiment's stop.timesteps_total")
    parser.add_argument("--torch-threads", type=int, default=0)
    parser.add_argument("--csv", type=Path, help="write step, mean_return, steps_per_s per iteration")
    cli = parser.parse_args()

    experiment = load_experiment(cli.experiment, parse_set_args(cli.overrides))
    extra = {"torch_threads": cli.torch_threads} | (
        {"total_timesteps": cli.total_timesteps} if cli.total_timesteps else {}
    )
    args = args_class.from_experiment(experiment, **extra)
    print(f"lean {algorithm} {experiment.name}: {args.describe()}, seed {args.seed}", flush=True)
    with open(cli.csv, "w", newline="") if cli.csv else open(os.devnull, "w") as out:
        writer = csv.writer(out)
        writer.writerow(["step", "mean_return", "steps_per_s"])
        for record in run(experiment, args):
            writer.writerow([record["step"], record["mean_return"], record["steps_per_s"]])
            out.flush()
            losses = " ".join(f"{LOSS_LABELS[key]} {record[key]:.3f}" for key in LOSS_LABELS if key in record)
            print(
                f"step {record['step']:>9,}  {record['steps_per_s']:6.1f} steps/s  (sample {record['sample_s']:.0f} s, "
                f"update {record['update_s']:.0f} s)  return {record['mean_return']:6.2f} "
                f"(last {WINDOW} episodes; {record['episodes']} ended)  {losses}",
                flush=True,
            )


if __name__ == "__main__":
    main()
