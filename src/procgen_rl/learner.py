"""RLlib's PPO learner with the Procgen paper's minibatches: N real transitions, shuffled each epoch.

RLlib 2.60's PPO learner differs from the paper's (baselines ppo2) update in two ways that
cost time and change the sampling of minibatches:

- To bootstrap GAE it appends one artificial frame to every episode chunk (`LOSS_MASK` False)
  and keeps those frames in the loss batch: 1-2% of a 64-env batch, computed and masked out.
- Its cyclic iterator takes fixed-size minibatches and shuffles only when it wraps around, so
  the first epoch walks the batch in episode order, and a batch a few steps longer than
  `num_minibatches x minibatch_size` (the env runner stops at the first vector step past it)
  costs one more full forward and backward pass per update (25 instead of 24 at ppo-8m).

Here the bootstrap frames are dropped once GAE has used them, and every epoch is a fresh
permutation split into `num_minibatches` near-equal minibatches: exactly
`update_epochs x num_minibatches` gradient steps over the sampled transitions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tree
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch


class DropBootstrapFrames(ConnectorV2):
    """Learner connector piece, after GAE: keep only the rows whose LOSS_MASK is True."""

    def __call__(self, *, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for module_id, columns in batch.items():
            mask = columns.pop(Columns.LOSS_MASK, None)
            if mask is not None:
                batch[module_id] = tree.map_structure(lambda column: column[mask], columns)
        return batch


def epoch_minibatches(batch: MultiAgentBatch, num_epochs: int, num_minibatches: int) -> Iterator[MultiAgentBatch]:
    """`num_epochs` passes over a single-module batch, each a fresh permutation of its rows
    split into `num_minibatches` near-equal minibatches (the paper's ppo2 minibatching)."""
    ((module_id, module_batch),) = batch.policy_batches.items()
    columns = dict(module_batch)
    for _ in range(num_epochs):
        for rows in np.array_split(np.random.permutation(len(module_batch)), num_minibatches):
            yield MultiAgentBatch({module_id: SampleBatch(tree.map_structure(lambda c: c[rows], columns))}, len(rows))


class ProcgenPPOLearner(PPOTorchLearner):
    """PPOTorchLearner with the paper's minibatching (see the module docstring)."""

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None and self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.append(DropBootstrapFrames())

    def _create_iterator_if_necessary(self, *, training_data: Any, num_epochs: int = 1,
                                      minibatch_size: int | None = None, **kwargs: Any) -> Any:
        if training_data.episodes is None or not minibatch_size:
            return super()._create_iterator_if_necessary(
                training_data=training_data, num_epochs=num_epochs, minibatch_size=minibatch_size, **kwargs)
        num_minibatches = max(1, round(self.config.train_batch_size_per_learner / minibatch_size))
        return epoch_minibatches(self._make_batch_if_necessary(training_data=training_data), num_epochs,
                                 num_minibatches)
