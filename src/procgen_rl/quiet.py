"""Library banners a user's run should not show, silenced where each is emitted.

Each entry names the banner and why it says nothing to a procgen-rl user. Called in every
process that builds RLlib objects: the driver (trainer.init_ray) and each env runner.
"""

from __future__ import annotations

import contextlib
import io
import logging


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


def silence_library_banners() -> None:
    """Logging levels and filters for the banners Ray and RLlib print on every run."""
    # "You are running PPO on the new API stack!": procgen-rl only runs the new API stack.
    logging.getLogger("ray.rllib.algorithms.algorithm_config").addFilter(_DropMessages("on the new API stack"))
    # "Install gputil for GPU system monitoring.": Tune's usage monitor, which procgen-rl does not report.
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    # "`RLModule(config=[RLModuleConfig object])` has been deprecated": RLlib's deprecations name
    # RLlib's own internal calls; the pinned versions are the maintainers' concern, not the user's.
    logging.getLogger("ray._common.deprecation").setLevel(logging.ERROR)


def import_gym_quietly() -> None:
    """Import gym (envpool's dependency) once with its stderr notice swallowed.

    gym prints "Gym has been unmaintained since 2022..." on import; envpool only uses its space
    classes, and procgen-rl's envs are gymnasium's. Later imports of gym are cached and silent.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        import gym  # noqa: F401
