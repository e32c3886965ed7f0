"""RLlib's PPO learner with the Procgen paper's update: its minibatches and its loss.

RLlib 2.60's PPO learner differs from the paper's (baselines ppo2) update in its minibatches,
which cost time and change the sampling:

- To bootstrap GAE it appends one artificial frame to every episode chunk (`LOSS_MASK` False)
  and keeps those frames in the loss batch, where they are computed and masked out.
- Its cyclic iterator takes fixed-size minibatches and shuffles only when it wraps around, so
  the first epoch walks the batch in episode order, and a batch a few steps longer than
  `num_minibatches x minibatch_size` (the env runner stops at the first vector step past it)
  costs one more full forward and backward pass per update.

Here the bootstrap frames are dropped once GAE has used them, and every epoch is a fresh
permutation split into `num_minibatches` near-equal minibatches: exactly
`update_epochs x num_minibatches` gradient steps over the sampled transitions. The learner
reports the env steps of each batch it updates on once (`reporting.STEPS_TRAINED`), where
RLlib's count adds every minibatch of every epoch.

Its Adam takes the paper's epsilon, 1e-5 (baselines ppo2, CleanRL), where RLlib builds torch's
default, 1e-8, which lets parameters with tiny gradients take full-size steps.

And in its loss: RLlib's value loss is the squared error clamped at `vf_clip_param` (no
gradient beyond it) and its advantages are standardized once per batch. The paper's loss
(`paper_ppo_loss`, which benchmarks/lean_ppo.py calls too) standardizes them per minibatch and
clips the new value to within `clip_coef` of the value predicted at sampling, taking the larger
error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY, PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import ALL_MODULES
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.torch_utils import explained_variance

from procgen_rl.models import without_nan_fill
from procgen_rl.progress import ProgressReporter
from procgen_rl.reporting import STEPS_TRAINED

ADAM_EPSILON = 1e-5  # baselines ppo2's and CleanRL's Adam epsilon (torch's default is 1e-8)


class DropBootstrapFrames(ConnectorV2):
    """Learner connector piece, after GAE: keep only the rows whose LOSS_MASK is True."""

    def __call__(self, *, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for module_id, columns in batch.items():
            mask = columns.pop(Columns.LOSS_MASK, None)
            if mask is not None:
                batch[module_id] = tree.map_structure(lambda column, mask=mask: column[mask], columns)
        return batch


def epoch_minibatches(batch: MultiAgentBatch, num_epochs: int, num_minibatches: int) -> Iterator[MultiAgentBatch]:
    """`num_epochs` passes over a single-module batch, each a fresh permutation of its rows
    split into `num_minibatches` near-equal minibatches (the paper's ppo2 minibatching)."""
    ((module_id, module_batch),) = batch.policy_batches.items()
    columns = dict(module_batch)
    for _ in range(num_epochs):
        for rows in np.array_split(np.random.permutation(len(module_batch)), num_minibatches):
            yield MultiAgentBatch(
                {module_id: SampleBatch(tree.map_structure(lambda c, rows=rows: c[rows], columns))}, len(rows)
            )


def paper_ppo_loss(
    logp_ratio: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    value: torch.Tensor,
    old_value: torch.Tensor,
    target: torch.Tensor,
    clip_coef: float,
    ent_coef: float,
    vf_coef: float,
    standardize_advantages: bool = True,
) -> dict[str, torch.Tensor]:
    """Baselines ppo2's loss on one minibatch: clipped surrogate, clipped value loss, entropy bonus.
    The advantages are standardized here, per minibatch, unless the caller did so already
    (PPG standardizes them over the whole batch)."""
    if standardize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
    pg_loss = torch.max(-advantages * logp_ratio, -advantages * logp_ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    clipped_value = old_value + (value - old_value).clamp(-clip_coef, clip_coef)
    v_loss = 0.5 * torch.max((value - target) ** 2, (clipped_value - target) ** 2).mean()
    entropy = entropy.mean()
    return {
        "loss": pg_loss - ent_coef * entropy + vf_coef * v_loss,
        POLICY_LOSS_KEY: pg_loss,
        VF_LOSS_KEY: v_loss,
        ENTROPY_KEY: entropy,
    }


class ProcgenPPOLearner(PPOTorchLearner):
    """PPOTorchLearner with the paper's minibatching and loss (see the module docstring)."""

    def build(self) -> None:
        without_nan_fill()
        super().build()
        self._progress = ProgressReporter()
        if self._learner_connector is not None and self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.append(DropBootstrapFrames())

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        """RLlib's one Adam per module, with the paper's epsilon; `config.lr` still schedules it."""
        params = self.get_parameters(self.module[module_id])
        optimizer = torch.optim.Adam(params, eps=ADAM_EPSILON)
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr)

    def _create_iterator_if_necessary(
        self, *, training_data: Any, num_epochs: int = 1, minibatch_size: int | None = None, **kwargs: Any
    ) -> Any:
        if training_data.episodes is None or not minibatch_size:
            return super()._create_iterator_if_necessary(
                training_data=training_data, num_epochs=num_epochs, minibatch_size=minibatch_size, **kwargs
            )
        num_minibatches = max(1, round(self.config.train_batch_size_per_learner / minibatch_size))
        batch = self._make_batch_if_necessary(training_data=training_data)
        # Once per batch, its rows (one agent: one per env step): RLlib's count adds every minibatch
        # of every epoch, and env_steps() counts the bootstrap step GAE appended to each episode chunk.
        self.metrics.log_value((ALL_MODULES, STEPS_TRAINED), batch.agent_steps(), reduce="sum")
        return self.minibatches(batch, num_epochs, num_minibatches)

    def minibatches(self, batch: MultiAgentBatch, num_epochs: int, num_minibatches: int) -> Iterator[MultiAgentBatch]:
        """An update's minibatches: `epoch_minibatches`, each announced to the progress board."""
        return self._reporting(epoch_minibatches(batch, num_epochs, num_minibatches), num_epochs * num_minibatches)

    def _reporting(
        self, minibatches: Iterator[MultiAgentBatch], total: int, what: str = "learning"
    ) -> Iterator[MultiAgentBatch]:
        """The minibatches, each announced to the progress board (procgen_rl.progress)."""
        for number, minibatch in enumerate(minibatches, 1):
            self._progress.phase(f"{what}: minibatch {number} of {total}")
            yield minibatch

    def compute_loss_for_module(
        self, *, module_id: str, config: PPOConfig, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        losses = self.ppo_losses(module_id, config, batch, fwd_out)
        loss = losses.pop("loss")
        self.metrics.log_dict(losses, key=module_id, window=1)
        return loss

    def ppo_losses(
        self,
        module_id: str,
        config: PPOConfig,
        batch: dict[str, Any],
        fwd_out: dict[str, Any],
        standardize_advantages: bool = True,
    ) -> dict[str, torch.Tensor]:
        """`paper_ppo_loss` on one minibatch, with the value's explained variance."""
        module = self.module[module_id].unwrapped()
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        value = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        losses = paper_ppo_loss(
            logp_ratio=torch.exp(dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP]),
            advantages=batch[Postprocessing.ADVANTAGES],
            entropy=dist.entropy(),
            value=value,
            old_value=batch[Columns.VF_PREDS],
            target=batch[Postprocessing.VALUE_TARGETS],
            clip_coef=config.clip_param,
            vf_coef=config.vf_loss_coeff,
            ent_coef=self.entropy_coeff_schedulers_per_module[module_id].get_current_value(),
            standardize_advantages=standardize_advantages,
        )
        losses[LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY] = explained_variance(batch[Postprocessing.VALUE_TARGETS], value)
        return losses
