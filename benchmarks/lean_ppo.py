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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from procgen_rl.callbacks.episode_metrics import WINDOW
from procgen_rl.config import Experiment, load_experiment, parse_set_args
from procgen_rl.envs import EPISODE_RETURN, ProcgenVectorEnv
from procgen_rl.learner import paper_ppo_loss
from procgen_rl.models.impala_cnn import ImpalaCNNNet
from procgen_rl.trainer import learner_gpus


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


def ppo_update(
    net: nn.Module, optimizer: torch.optim.Optimizer, args: Args, batch: dict[str, torch.Tensor]
) -> dict[str, float]:
    """`update_epochs` passes of `num_minibatches` clipped-PPO steps over a flattened rollout.

    The loss is the harness's (`paper_ppo_loss`), on the minibatch's valid rows: a step that
    only reset a finished env is not a transition.
    """
    for _ in range(args.update_epochs):
        for idx in torch.randperm(args.batch_size, device=batch["obs"].device).split(args.minibatch_size):
            idx = idx[batch["valid"][idx]]
            logits, value = net(batch["obs"][idx])
            dist = Categorical(logits=logits)
            losses = paper_ppo_loss(
                logp_ratio=(dist.log_prob(batch["actions"][idx]) - batch["logprobs"][idx]).exp(),
                advantages=batch["advantages"][idx],
                entropy=dist.entropy(),
                value=value,
                old_value=batch["values"][idx],
                target=batch["returns"][idx],
                clip_coef=args.clip_coef,
                ent_coef=args.ent_coef,
                vf_coef=args.vf_coef,
            )
            optimizer.zero_grad()
            losses["loss"].backward()
            nn.utils.clip_grad_norm_(net.parameters(), args.max_grad_norm)
            optimizer.step()
    return {key: losses[key].item() for key in ("policy_loss", "vf_loss", "entropy")}


def train(experiment: Experiment, args: Args) -> Iterator[dict[str, float]]:
    """Run PPO; yields one record per rollout+update: steps so far, steps/s, and the mean return
    of the last WINDOW episodes, the harness's `episode_reward_mean`.

    The network runs where the harness's learner would (`resources.learner_device`): on a GPU,
    inference and the update happen there and the rollout storage stays uint8 in host memory.
    """
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    envs = ProcgenVectorEnv(
        experiment.env_config, args.num_envs, normalize_reward_gamma=args.gamma if args.normalize_reward else None
    )
    device = torch.device("cuda" if learner_gpus(experiment.resources.learner_device) else "cpu")
    net = ImpalaCNNNet.from_model_config(
        envs.single_observation_space.shape, int(envs.single_action_space.n), experiment.model.custom_model_config
    ).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate, eps=1e-5)

    # Storage: frames stay uint8 until the network scales them.
    shape = (args.num_steps, args.num_envs)
    obs = torch.zeros(shape + envs.single_observation_space.shape, dtype=torch.uint8)
    actions, logprobs, values = torch.zeros(shape, dtype=torch.long), torch.zeros(shape), torch.zeros(shape)
    rewards = np.zeros(shape, np.float32)
    terminated, truncated, restarting = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)

    next_obs = torch.from_numpy(envs.reset(seed=args.seed)[0])
    next_restarting = np.zeros(args.num_envs, bool)  # the next step only resets these envs
    step, returns = 0, deque(maxlen=WINDOW)
    try:
        while step < args.total_timesteps:
            started, episodes = time.perf_counter(), 0
            for t in range(args.num_steps):
                obs[t], restarting[t] = next_obs, next_restarting
                with torch.no_grad():
                    logits, value = net(next_obs.to(device))
                dist = Categorical(logits=logits)
                action = dist.sample()
                actions[t], logprobs[t], values[t] = action.cpu(), dist.log_prob(action).cpu(), value.cpu()
                frames, rewards[t], terminated[t], truncated[t], info = envs.step(actions[t].numpy())
                next_obs, next_restarting = torch.from_numpy(frames), terminated[t] | truncated[t]
                if EPISODE_RETURN in info:
                    finished = info[EPISODE_RETURN][info[f"_{EPISODE_RETURN}"]]
                    returns.extend(finished.tolist())
                    episodes += len(finished)
            step += args.batch_size
            sampled = time.perf_counter()

            advantages = gae(
                rewards,
                values.numpy(),
                net.values(next_obs.to(device)).cpu().numpy(),
                terminated,
                truncated,
                args.gamma,
                args.gae_lambda,
            )
            batch = {
                "obs": obs.flatten(0, 1),
                "actions": actions.flatten(),
                "logprobs": logprobs.flatten(),
                "values": values.flatten(),
                "advantages": torch.from_numpy(advantages).flatten(),
                "valid": torch.from_numpy(~restarting).flatten(),
            }
            batch = {key: column.to(device) for key, column in batch.items()}
            batch["returns"] = batch["advantages"] + batch["values"]
            losses = ppo_update(net, optimizer, args, batch)
            seconds = time.perf_counter() - started
            yield {
                "step": step,
                "steps_per_s": args.batch_size / seconds,
                "sample_s": sampled - started,
                "update_s": seconds - (sampled - started),
                "episodes": episodes,
                "mean_return": float(np.mean(returns)) if returns else float("nan"),
                **losses,
            }
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = Args.from_experiment(experiment, **extra)
    print(
        f"lean PPO {experiment.name}: {args.num_envs} envs x {args.num_steps} steps, {args.update_epochs} epochs, "
        f"{args.num_minibatches} minibatches, seed {args.seed}",
        flush=True,
    )
    with open(cli.csv, "w", newline="") if cli.csv else open(os.devnull, "w") as out:
        writer = csv.writer(out)
        writer.writerow(["step", "mean_return", "steps_per_s"])
        for record in train(experiment, args):
            writer.writerow([record["step"], record["mean_return"], record["steps_per_s"]])
            out.flush()
            print(
                f"step {record['step']:>9,}  {record['steps_per_s']:6.1f} steps/s  (sample {record['sample_s']:.0f} s, "
                f"update {record['update_s']:.0f} s)  return {record['mean_return']:6.2f} "
                f"(last {WINDOW} episodes; {record['episodes']} ended)  "
                f"pg {record['policy_loss']:.3f} vf {record['vf_loss']:.3f} ent {record['entropy']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
