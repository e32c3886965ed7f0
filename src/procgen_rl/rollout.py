"""Evaluate a checkpoint on its training levels and on unseen levels, without Ray.

Both splits use the training run's distribution_mode and options. "Unseen" is num_levels=0
(Procgen's full level distribution; 200 training levels out of 2^31 seeds makes overlap
negligible), as in the paper's test curves. Each env contributes exactly its first episodes,
a fixed number, so short episodes are not over-counted. Actions are sampled from the policy, as
in training. Evaluation during training (procgen_rl.evaluation) plays its episodes the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from procgen_rl.config import EnvConfig, Experiment, load_experiment
from procgen_rl.errors import CheckpointError
from procgen_rl.procgen import FRAME_SHAPE, normalized_score
from procgen_rl.run_dir import check_writable, resolve_checkpoint, writing

MODULE_PATH = Path("learner_group", "learner", "rl_module", "default_policy")
VIDEO_SCALE = 4  # 64x64 frames -> 256x256 video
VIDEO_FPS = 15


def load_module(checkpoint: Path) -> Any:
    """The trained RLModule from an RLlib checkpoint (CPU, eval mode)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = checkpoint / MODULE_PATH
    if not path.is_dir():
        raise CheckpointError(f"{checkpoint}: no policy at {MODULE_PATH}; not an RLlib algorithm checkpoint")
    try:
        module = RLModule.from_checkpoint(str(path.resolve()))
    except Exception as err:  # pickle, torch and RLlib raise many types for a damaged file
        cause = " ".join(f"{type(err).__name__}: {err}".split())  # one line
        raise CheckpointError(f"{checkpoint}: cannot load the policy ({cause})") from None
    module.eval()
    return module


def export_policy(checkpoint: Path, path: Path) -> None:
    """Save the policy as an exported program that only torch needs to load:

    torch.export.load(path).module()(uint8 frames (N, C, 64, 64)) -> logits (N, 15)
    """
    import torch
    from ray.rllib.core.columns import Columns

    module = load_module(checkpoint)

    class Policy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]

    example = torch.zeros((2, *module.observation_space.shape), dtype=torch.uint8)
    with torch.no_grad():
        program = torch.export.export(Policy().eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))


@dataclass
class Played:
    """What `run_episodes` played: each episode's raw return and level seed, env-major, and env 0's
    first episode's frames when recorded."""

    returns: list[float]
    levels: list[int]
    frames: list[np.ndarray]


def unseen_levels(env_config: EnvConfig) -> EnvConfig:
    """The test split of a training env config: the full level distribution (num_levels 0), starting
    past the training levels, with the same distribution mode and options."""
    return dataclasses.replace(env_config, num_levels=0, start_level=env_config.start_level + env_config.num_levels)


def run_episodes(
    module: Any, env_config: EnvConfig, episodes: int, seed: int, num_envs: int | None = None, record: bool = False
) -> Played:
    """The first `episodes / num_envs` episodes of each of `num_envs` envs (default: one each), the
    policy's actions sampled from its logits; env 0's first episode's frames if `record`."""
    import torch
    from ray.rllib.core.columns import Columns

    from procgen_rl.envs import EPISODE_LEVEL, EPISODE_RETURN, ProcgenVectorEnv

    num_envs = num_envs or episodes
    per_env = episodes // num_envs
    device = next(module.parameters()).device
    env = ProcgenVectorEnv(env_config, num_envs, seed=seed)
    obs, _ = env.reset()
    returns, levels = np.full((num_envs, per_env), np.nan), np.zeros((num_envs, per_env), np.int64)
    finished = np.zeros(num_envs, np.int64)
    frames = [obs[0, -FRAME_SHAPE[0] :]] if record else []
    with torch.no_grad():
        while (finished < per_env).any():
            batch = {Columns.OBS: torch.from_numpy(obs).to(device)}
            logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS].cpu()
            actions = torch.distributions.Categorical(logits=logits).sample().numpy()
            obs, _, _, _, info = env.step(actions)
            if record and finished[0] == 0:
                frames.append(obs[0, -FRAME_SHAPE[0] :])
            if EPISODE_RETURN in info:
                for i in np.flatnonzero(info[f"_{EPISODE_RETURN}"] & (finished < per_env)):
                    returns[i, finished[i]], levels[i, finished[i]] = info[EPISODE_RETURN][i], info[EPISODE_LEVEL][i]
                    finished[i] += 1
    env.close()
    return Played(returns.ravel().tolist(), levels.ravel().tolist(), frames)


def write_video(frames: list[np.ndarray], path: Path) -> None:
    import imageio.v2 as imageio

    scaled: list[Any] = [f.transpose(1, 2, 0).repeat(VIDEO_SCALE, 0).repeat(VIDEO_SCALE, 1) for f in frames]
    imageio.mimwrite(path, scaled, fps=VIDEO_FPS, macro_block_size=16)


def split_summary(returns: list[float], env_config: EnvConfig) -> dict[str, Any]:
    mean = float(np.mean(returns))
    score = normalized_score(mean, env_config.env_name, env_config.distribution_mode)
    return {
        "num_levels": env_config.num_levels,
        "start_level": env_config.start_level,
        "mean_return": mean,
        "normalized_score": None if math.isnan(score) else score,
        "returns": returns,
    }


def rollout(run_or_checkpoint: str, episodes: int, out_dir: str | None, video: bool, seed: int) -> dict:
    """Evaluate on train and unseen levels; write summary.json (and episode.mp4); return the summary."""
    run, checkpoint = resolve_checkpoint(run_or_checkpoint)
    if not run.config_path.is_file():
        raise CheckpointError(f"{run.path}: no config.yaml beside the checkpoints; not a procgen-rl run directory")
    experiment: Experiment = load_experiment(run.config_path)
    out = Path(out_dir) if out_dir else run.rollout_path
    check_writable(out, "--out" if out_dir else "rollout output", "choose another --out")
    module = load_module(checkpoint)
    train_env = experiment.env_config
    test_env = unseen_levels(train_env)

    train = run_episodes(module, train_env, episodes, seed, record=video)
    test = run_episodes(module, test_env, episodes, seed + 1)
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "env_name": train_env.env_name,
        "distribution_mode": train_env.distribution_mode,
        "episodes": episodes,
        "train": split_summary(train.returns, train_env),
        "test": split_summary(test.returns, test_env),
    }
    scores = summary["train"]["normalized_score"], summary["test"]["normalized_score"]
    summary["generalization_gap"] = None if None in scores else scores[0] - scores[1]

    with writing(out, "the rollout"):
        out.mkdir(parents=True, exist_ok=True)
        if video:
            summary["video"] = str(out / "episode.mp4")
            write_video(train.frames, Path(summary["video"]))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["summary_path"] = str(out / "summary.json")
    return summary
