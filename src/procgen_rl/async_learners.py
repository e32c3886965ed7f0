"""RLlib's IMPALA and APPO learners, made to finish their update before the process exits.

RLlib 2.60's IMPALA/APPO learner trains in a daemon thread (`_LearnerThread`). Its `shutdown`
asks that thread to stop and waits 5 s for it, less than one update on a CPU: a 16,384-frame
APPO batch takes ~10 s with a small IMPALA-CNN on 2 cores, ~45 s with the paper's. The
interpreter then exits while torch computes in that thread, the thread is torn down inside a
C++ frame, and Ray's terminate handler aborts the process: exit 134 (SIGABRT) after a run that
had stopped cleanly and saved its checkpoint. Here `shutdown` waits for the update in progress.
"""

from __future__ import annotations

from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner


class FinishUpdateOnShutdown:
    """Mixin for a learner with a `_learner_thread`: shutdown returns once that thread has ended."""

    def shutdown(self) -> None:
        super().shutdown()  # sets the thread's stop event; it ends after the update it is in
        thread = getattr(self, "_learner_thread", None)
        if thread is not None:
            thread.join()


class ProcgenAPPOLearner(FinishUpdateOnShutdown, APPOTorchLearner):
    """APPOTorchLearner whose shutdown waits for its update thread."""


class ProcgenIMPALALearner(FinishUpdateOnShutdown, IMPALATorchLearner):
    """IMPALATorchLearner whose shutdown waits for its update thread."""
