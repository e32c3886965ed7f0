"""RLlib's IMPALA and APPO learners, made to finish their update before the process exits, and
APPO's target network made to follow the trained one at the rate its setting names.

RLlib 2.60's IMPALA/APPO learner trains in a daemon thread (`_LearnerThread`). Its `shutdown`
asks that thread to stop and waits 5 s for it, often less than one update on a CPU. The
interpreter then exits while torch computes in that thread, the thread is torn down inside a
C++ frame, and Ray's terminate handler aborts the process: exit 134 (SIGABRT) after a run that
had stopped cleanly and saved its checkpoint. Here `shutdown` waits for the update in progress.

APPO updates its target network (the "old policy" the surrogate clips against) once
`target_network_update_freq x N x K x train batch` env steps have been trained since the last
update (N x K: its circular buffer), that is every `freq x N x K` passes over a train batch,
as RLlib documents it. The count it compares, `timesteps[NUM_ENV_STEPS_TRAINED_LIFETIME]`, is
the driver's: taken when it hands a batch over, from learner results it has received so far,
carried unchanged by the circular buffer's replays, and adding the whole batch per minibatch.
It does not track the passes the learner made, and the target moves less often than
configured. `ProcgenAPPOLearner` counts its own passes, so the target follows as configured.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner
from ray.rllib.utils.metrics import NUM_ENV_STEPS_TRAINED_LIFETIME

from procgen_rl.models import without_nan_fill


class AsyncLearner:
    """Mixin for a learner with a `_learner_thread`: no NaN fill (procgen_rl.models.without_nan_fill),
    and shutdown returns once that thread has ended."""

    def build(self) -> None:
        without_nan_fill()
        super().build()  # type: ignore[misc]

    def shutdown(self) -> None:
        super().shutdown()  # type: ignore[misc]  # sets the thread's stop event; it ends after the update it is in
        thread = getattr(self, "_learner_thread", None)
        if thread is not None:
            thread.join()


class ProcgenAPPOLearner(AsyncLearner, APPOTorchLearner):
    """APPOTorchLearner whose target network update counts the batches this learner trained."""

    frames_trained = 0  # train batches passed over (replays included) x their size

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        self.frames_trained += self.config.train_batch_size_per_learner
        super().after_gradient_based_update(timesteps=timesteps | {NUM_ENV_STEPS_TRAINED_LIFETIME: self.frames_trained})


class ProcgenIMPALALearner(AsyncLearner, IMPALATorchLearner):
    """IMPALATorchLearner whose shutdown waits for its update thread."""
