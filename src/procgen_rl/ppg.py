"""Phasic Policy Gradient (Cobbe et al. 2021) on RLlib's new API stack: `algorithm.name: PPG`.

PPG alternates two phases over separate policy and value networks. The policy phase is
`n_iteration` PPO iterations: each samples num_envs x num_steps steps, trains the policy
network on the clipped surrogate for `e_policy` epochs and the value network on the value loss
for `e_value` epochs (one joint loss in the epochs where both train, as in the paper's code),
and keeps the batch's frames and value targets. The auxiliary phase then makes `e_aux` passes
over all the phase's frames with the joint loss

    0.5 (V_aux(s) - V_targ)^2 + beta_clone KL(pi_old(.|s) || pi(.|s))  +  0.5 (V(s) - V_targ)^2

where pi_old is the policy as the auxiliary phase found it: the auxiliary value head on the
policy network carries what predicts returns into the policy's features, the KL keeps the
policy where it was, and the value network trains once more on the phase's targets.

On RLlib: the algorithm is RLlib's PPO, whose training_step samples, updates the learner and
syncs the weights; what PPG adds lives in the learner. `ProcgenPPGLearner` is the harness's PPO
learner (procgen_rl.learner) whose update of a policy iteration also keeps the batch's frames
(uint8, in host memory) and value targets, and whose update of a phase's last iteration goes on,
after the policy minibatches, to the auxiliary phase's minibatches, through the same `_update`
(forward, loss, global-norm clipping, Adam step): the env runners get the weights the auxiliary
phase left. One Adam serves both phases, as in CleanRL's ppg_procgen.py.

As in CleanRL's ppg_procgen.py (and the paper's code), advantages are standardized once over the
whole batch, not per minibatch as the harness's PPO does, and the policy phase clips the value
loss as PPO does. Auxiliary minibatches of num_aux_rollouts x num_steps frames are drawn at
random from all the phase's frames; CleanRL draws whole rollouts of one env, which matters
only to a recurrent policy.

A checkpoint holds the phase count and how far into its phase the learner is, not the frames
(6 GiB at the paper's sizes): a run resumed mid-phase continues the phase, whose auxiliary phase
then covers only the policy iterations after the resume, and says so. Phases keep ending at
multiples of n_iteration iterations, so checkpoints taken there lose nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.ppo.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from torch.distributions import Categorical, kl_divergence

from procgen_rl.config import PhasicConfig
from procgen_rl.learner import ProcgenPPOLearner, epoch_minibatches
from procgen_rl.models import AUX_VF_PREDS
from procgen_rl.models.impala_cnn import VALUE_CHUNK
from procgen_rl.reporting import AUXILIARY_LOSSES

OLD_LOGITS = "old_action_dist_inputs"  # an auxiliary minibatch's column: the logits before the phase
PHASE_STATE = "ppg_phase"  # the learner state's entry: phases done, policy iterations into this one
AUX_VALUE_LOSS, AUX_KL, AUX_VF_LOSS = AUXILIARY_LOSSES  # as the metric line names them


def auxiliary_loss(
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    aux_value: torch.Tensor,
    value: torch.Tensor,
    target: torch.Tensor,
    beta_clone: float,
) -> dict[str, torch.Tensor]:
    """The auxiliary phase's loss on one minibatch: the joint loss (auxiliary value loss plus
    beta_clone x the KL from the policy before the phase) plus the value network's loss."""
    kl = kl_divergence(Categorical(logits=old_logits), Categorical(logits=logits)).mean()
    aux_value_loss = 0.5 * ((aux_value - target) ** 2).mean()
    value_loss = 0.5 * ((value - target) ** 2).mean()
    return {
        "loss": aux_value_loss + beta_clone * kl + value_loss,
        AUX_VALUE_LOSS: aux_value_loss,
        AUX_KL: kl,
        AUX_VF_LOSS: value_loss,
    }


class PPGConfig(PPOConfig):
    """RLlib's PPOConfig with PPG's settings (`ppg`, procgen_rl.config.PhasicConfig) and learner."""

    def __init__(self, algo_class: Any = None) -> None:
        super().__init__(algo_class=algo_class)
        self.ppg = PhasicConfig()

    def training(self, *, ppg: PhasicConfig | Any = NotProvided, **kwargs: Any) -> PPGConfig:
        super().training(**kwargs)
        if ppg is not NotProvided:
            self.ppg = ppg
        return self

    def get_default_learner_class(self) -> type[ProcgenPPGLearner]:
        return ProcgenPPGLearner


class ProcgenPPGLearner(ProcgenPPOLearner):
    """The PPO learner with PPG's policy epochs, its buffer of a phase's frames and its auxiliary
    phase (see the module docstring)."""

    config: PPGConfig

    def build(self) -> None:
        super().build()
        self._frames: torch.Tensor | None = None  # the phase's frames, allocated at its first iteration
        self._targets: torch.Tensor | None = None
        self._rows = 0  # frames of this phase held
        self._iterations = 0  # policy iterations of this phase done
        self._kept = 0  # of those, the ones whose frames are held (all but those before a resume)
        self._phases = 0  # phases done
        self._train_policy = self._train_value = True  # which losses the policy epoch in progress trains

    def minibatches(self, batch: MultiAgentBatch, num_epochs: int, num_minibatches: int) -> Iterator[MultiAgentBatch]:
        """A policy iteration's minibatches (`num_epochs`, PPO's, goes unused), after keeping its
        frames; at a phase's last iteration, the auxiliary phase's after them."""
        ppg = self.config.ppg
        ((module_id, columns),) = batch.policy_batches.items()
        advantages = columns[Postprocessing.ADVANTAGES]
        columns[Postprocessing.ADVANTAGES] = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
        epochs = max(ppg.e_policy, ppg.e_value)
        minibatches = self._reporting(self._policy_epochs(batch, num_minibatches), epochs * num_minibatches)
        if not ppg.e_aux:
            return minibatches
        self._keep(columns[Columns.OBS], columns[Postprocessing.VALUE_TARGETS])
        self._iterations += 1
        if self._iterations < ppg.n_iteration:
            return minibatches
        return itertools.chain(minibatches, self._auxiliary_phase(module_id))

    def _policy_epochs(self, batch: MultiAgentBatch, num_minibatches: int) -> Iterator[MultiAgentBatch]:
        """The minibatches of e_policy epochs of the surrogate and e_value of the value loss, joint
        in the epochs both train; each sets which losses its update trains."""
        ppg = self.config.ppg
        epochs = max(ppg.e_policy, ppg.e_value)
        for number, minibatch in enumerate(epoch_minibatches(batch, epochs, num_minibatches)):
            epoch = number // num_minibatches
            self._train_policy, self._train_value = epoch < ppg.e_policy, epoch < ppg.e_value
            yield minibatch

    def _keep(self, frames: torch.Tensor, targets: torch.Tensor) -> None:
        """Append one policy iteration's frames (uint8) and value targets to the phase's buffer."""
        if self._frames is None:
            # A batch is a little longer than num_envs x num_steps: sampling stops at the first
            # vector step past it.
            envs = self.config.num_envs_per_env_runner * max(1, self.config.num_env_runners)
            capacity = self.config.ppg.n_iteration * (self.config.train_batch_size_per_learner + envs)
            self._frames = torch.empty((capacity, *frames.shape[1:]), dtype=torch.uint8)
            self._targets = torch.empty(capacity)
        assert self._targets is not None
        end = self._rows + len(frames)
        if end > len(self._frames):
            raise RuntimeError(f"PPG's buffer of {len(self._frames)} frames cannot take {end}")  # a sampling bug
        self._frames[self._rows : end] = frames.cpu()
        self._targets[self._rows : end] = targets.cpu()
        self._rows, self._kept = end, self._kept + 1

    def _auxiliary_phase(self, module_id: str) -> Iterator[MultiAgentBatch]:
        """The auxiliary phase's minibatches: e_aux passes over the phase's frames, in near-equal
        minibatches of about num_aux_rollouts x num_steps frames, with their value targets and
        the logits of the policy as the phase found it. Empties the buffer when done."""
        assert self._frames is not None and self._targets is not None
        ppg = self.config.ppg
        frames, targets = self._frames[: self._rows], self._targets[: self._rows]
        module = self.module[module_id].unwrapped()
        self._progress.phase("auxiliary phase: the policy's logits on the phase's frames")
        with torch.no_grad():
            old_logits = torch.cat(
                [
                    module.forward_inference({Columns.OBS: chunk.to(self._device)})[Columns.ACTION_DIST_INPUTS].cpu()
                    for chunk in frames.split(VALUE_CHUNK)
                ]
            )
        aux_minibatch = ppg.num_aux_rollouts * self.config.rollout_fragment_length
        num_minibatches = max(1, round(self._kept * self.config.train_batch_size_per_learner / aux_minibatch))

        def minibatches() -> Iterator[MultiAgentBatch]:
            for _ in range(ppg.e_aux):
                for rows in np.array_split(np.random.permutation(len(frames)), num_minibatches):
                    index = torch.from_numpy(rows)
                    columns = {
                        Columns.OBS: frames[index],
                        Postprocessing.VALUE_TARGETS: targets[index],
                        OLD_LOGITS: old_logits[index],
                    }
                    columns = {name: column.to(self._device) for name, column in columns.items()}
                    yield MultiAgentBatch({module_id: SampleBatch(columns)}, len(rows))

        yield from self._reporting(minibatches(), ppg.e_aux * num_minibatches, "auxiliary phase")
        self._rows = self._iterations = self._kept = 0
        self._phases += 1

    def compute_loss_for_module(
        self, *, module_id: str, config: PPGConfig, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        if OLD_LOGITS in batch:
            module = self.module[module_id].unwrapped()
            losses = auxiliary_loss(
                logits=fwd_out[Columns.ACTION_DIST_INPUTS],
                old_logits=batch[OLD_LOGITS],
                aux_value=fwd_out[AUX_VF_PREDS],
                value=module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS)),
                target=batch[Postprocessing.VALUE_TARGETS],
                beta_clone=config.ppg.beta_clone,
            )
        else:
            losses = self.ppo_losses(module_id, config, batch, fwd_out, standardize_advantages=False)
            if not self._train_value:  # a policy-only epoch: the surrogate and the entropy bonus
                ent_coef = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
                losses["loss"] = losses[POLICY_LOSS_KEY] - ent_coef * losses[ENTROPY_KEY]
            elif not self._train_policy:  # a value-only epoch
                losses["loss"] = config.vf_loss_coeff * losses[VF_LOSS_KEY]
        loss = losses.pop("loss")
        self.metrics.log_dict(losses, key=module_id, window=1)
        return loss

    def compute_gradients(self, loss_per_module: dict[str, Any], **kwargs: Any) -> dict[Any, torch.Tensor]:
        """Only the gradients the loss reached: in a value-only epoch the policy network has none,
        and Adam must not move it (a zero gradient would still step it by its momentum)."""
        return {
            ref: grad for ref, grad in super().compute_gradients(loss_per_module, **kwargs).items() if grad is not None
        }

    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return super().get_state(*args, **kwargs) | {
            PHASE_STATE: {"phases": self._phases, "iterations": self._iterations}
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore; a checkpoint taken mid-phase continues its phase without the frames it had kept."""
        super().set_state(state)
        phase = state.get(PHASE_STATE)
        if phase is None:
            return
        n = self.config.ppg.n_iteration
        self._phases, self._iterations = phase["phases"], min(phase["iterations"], n - 1)
        self._rows = self._kept = 0
        if self._iterations:
            left = n - self._iterations
            print(
                f"PPG: resuming {self._iterations} of {n} policy iterations into phase {self._phases + 1}; "
                f"checkpoints do not keep a phase's frames, so its auxiliary phase, after {left} more policy "
                f"iteration{'s' * (left != 1)}, covers only {'those' if left != 1 else 'that one'}",
                flush=True,
            )
