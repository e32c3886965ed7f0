"""Models, selected by file name: `custom_model: impala_cnn` loads `models/impala_cnn.py`.

To add one, drop `models/<name>.py` here defining `MODEL`, an RLlib TorchRLModule subclass that
implements ValueFunctionAPI (PPO, APPO, IMPALA, PPG need values) and TargetNetworkAPI (APPO needs
targets), and whose `_forward_exploration` returns `Columns.VF_PREDS` (PPO's and PPG's clipped
value loss needs the values predicted at sampling). For PPG its `_forward_train` also returns
`AUX_VF_PREDS`, the auxiliary value head's output (models/ppg_impala_cnn.py).
It receives `custom_model_config` as its `model_config`
and uint8 frames (N, C, 64, 64), and keeps no recurrent state: the env runners feed it frames only
(`procgen_rl.env_runner`) and sample actions from its action distribution over
`Columns.ACTION_DIST_INPUTS`. A model outside this package is named `package.module:ClassName`.
`check_model` holds every model to this before Ray starts.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from procgen_rl.errors import ConfigError

AUX_VF_PREDS = "aux_vf_preds"  # PPG: the auxiliary value head's output, from `_forward_train`


def without_nan_fill() -> None:
    """Keep torch deterministic but stop it filling every new tensor with NaN, in this process.

    Seeded, RLlib turns on `torch.use_deterministic_algorithms` in each of its processes when
    torch is a CPU build (ray.rllib.utils.torch_utils.set_torch_seed), and deterministic torch
    also fills each tensor it allocates with NaN (`torch.utils.deterministic.
    fill_uninitialized_memory`), a check for ops that read memory before writing it: every
    activation and gradient buffer is then written twice. The harness's networks read only what
    they wrote, so its env runners and learners call this; the algorithms stay deterministic.
    """
    import torch

    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]


def check_model(
    module_class: Any, model_config: dict, algorithm: str, observation_space: gym.spaces.Box, action_space: gym.Space
) -> None:
    """Build the model on the env's spaces and sample and train-forward one frame with it, so a model
    that breaks the contract above fails in one line here instead of deep inside an env runner or
    the loss."""
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis import TargetNetworkAPI, ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    if not (isinstance(module_class, type) and issubclass(module_class, TorchRLModule)):
        raise ConfigError(f"model.custom_model: {module_class!r} is not an RLlib TorchRLModule subclass")
    name = module_class.__name__
    needed = {
        "PPO": [ValueFunctionAPI],
        "PPG": [ValueFunctionAPI],
        "IMPALA": [ValueFunctionAPI],
        "APPO": [ValueFunctionAPI, TargetNetworkAPI],
    }
    missing = [api.__name__ for api in needed.get(algorithm, []) if not issubclass(module_class, api)]
    if missing:
        raise ConfigError(f"model.custom_model: {name} must implement {' and '.join(missing)} for {algorithm}")
    try:
        module = module_class(observation_space=observation_space, action_space=action_space, model_config=model_config)
        recurrent = module.is_stateful()
        frame = {Columns.OBS: torch.zeros((1, *observation_space.shape), dtype=torch.uint8)}
        out = {} if recurrent else module.forward_exploration(frame)
        trained = {} if recurrent else module.forward_train(frame)
    except Exception as err:  # a model's own code: any type, one line
        raise ConfigError(
            f"model.custom_model_config: {name} fails to build or sample with {model_config}: "
            f"{type(err).__name__}: {err}"
        ) from None
    if recurrent:
        raise ConfigError(
            f"model.custom_model: {name} is recurrent (its get_initial_state is not empty); "
            "the env runners feed a model frames only, no state"
        )
    if algorithm in ("PPO", "PPG") and Columns.VF_PREDS not in out:
        raise ConfigError(
            f"model.custom_model: {name}._forward_exploration must also return Columns.VF_PREDS, "
            f"the values {algorithm}'s clipped value loss compares against (see models/impala_cnn.py)"
        )
    if algorithm == "PPG" and AUX_VF_PREDS not in trained:
        raise ConfigError(
            f"model.custom_model: {name} has no auxiliary value head (its _forward_train returns no "
            f"{AUX_VF_PREDS!r}), which PPG trains in its auxiliary phase; use ppg_impala_cnn, the paper's "
            "separate policy and value networks"
        )
