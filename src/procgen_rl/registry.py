"""Name -> class lookup for models, algorithms and callbacks, one rule for all three.

`name` loads `procgen_rl/<kind>/<name>.py` and takes its MODEL / ALGORITHM / CALLBACK;
`package.module:Attr` imports anything on the Python path. Unknown names raise ConfigError
listing what exists, so a typo fails before Ray starts.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from procgen_rl.errors import ConfigError

ENTRY_ATTRIBUTE = {"models": "MODEL", "algorithms": "ALGORITHM", "callbacks": "CALLBACK"}
# Algorithms named without a file: RLlib's, and PPG, which the harness adds (procgen_rl.ppg).
BUILTIN_ALGORITHMS = {
    "PPO": "ray.rllib.algorithms.ppo:PPOConfig",
    "APPO": "ray.rllib.algorithms.appo:APPOConfig",
    "IMPALA": "ray.rllib.algorithms.impala:IMPALAConfig",
    "PPG": "procgen_rl.ppg:PPGConfig",
}


def available(kind: str) -> list[str]:
    """Names usable without a module path: the files in procgen_rl/<kind>/."""
    package = importlib.import_module(f"procgen_rl.{kind}")
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__))


def resolve(kind: str, name: str, key: str) -> Any:
    """The class `name` stands for; `key` is the config key, quoted in errors."""
    if kind == "algorithms" and name in BUILTIN_ALGORITHMS:
        name = BUILTIN_ALGORITHMS[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
    else:
        module_name, attribute = f"procgen_rl.{kind}.{name}", ENTRY_ATTRIBUTE[kind]
        if name not in available(kind):
            known = list(BUILTIN_ALGORITHMS) if kind == "algorithms" else []
            known += available(kind)
            raise ConfigError(
                f"{key}: unknown {kind[:-1]} {name!r}; available: {', '.join(known) or 'none'}, "
                f"or add procgen_rl/{kind}/{name}.py, or give package.module:ClassName"
            )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key}: cannot import {module_name!r} for {name!r}: {err}") from None
    if not hasattr(module, attribute):
        raise ConfigError(f"{key}: {module_name} has no {attribute!r}")
    return getattr(module, attribute)
