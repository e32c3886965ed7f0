"""What the two SageMaker launchers (`sagemaker_local`, `cloud`) share, so a job means the same in both.

The same image, the same hyperparameters (`sagemaker.encode_hyperparameters`), a fresh random
RAY_AUTH_TOKEN in the job's environment, no profiler or debugger hooks, SDK telemetry off.
"""

from __future__ import annotations

import logging
import os
import secrets
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

from procgen_rl import envvars
from procgen_rl.config import Experiment
from procgen_rl.errors import UserError
from procgen_rl.layout import Layout
from procgen_rl.runtime.sagemaker import EXPERIMENT_KEY, encode_hyperparameters, job_experiment

# Passed to the SDK's sessions: no telemetry, and no SDK defaults read from S3 or ~/.config.
SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def estimator_arguments(experiment_file: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Estimator keyword arguments every launch uses; the caller adds image, role, instances, output."""
    return {
        "hyperparameters": encode_hyperparameters(experiment_file, overrides),
        "environment": {envvars.RAY_AUTH_TOKEN: secrets.token_hex(16)},  # one per job, the same on every host
        "disable_profiler": True,
        "debugger_hook_config": False,
    }


def resolved_in_job(
    experiment_file: str, overrides: dict[str, Any], resources: dict[str, Any]
) -> tuple[Experiment, Layout]:
    """The experiment and its layout as the job's hosts will resolve them from its hyperparameters
    and `resources`, the resourceconfig.json they will read (same function, same values), so they
    are checked here and the host and the job agree on them."""
    hyperparameters = {EXPERIMENT_KEY: os.path.relpath(experiment_file), **overrides}
    return job_experiment(hyperparameters, resources)


def import_sdk() -> ModuleType:
    """The SageMaker SDK v2 (docs/sagemaker-sdk.md says why not v3), imported without its
    v2-deprecation notices and config-file chatter."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("sagemaker")
    except PackageNotFoundError:
        raise UserError("the SageMaker Python SDK is not installed: pip install 'procgen-rl[sagemaker]'") from None
    if int(installed.split(".")[0]) >= 3:
        raise UserError(
            f"SageMaker Python SDK {installed} is installed; the launchers need v2 (docs/sagemaker-sdk.md): "
            "use the project's own venv (make venv)"
        )
    # Read at each notice (the import's and each Estimator's): set before the first import.
    os.environ.setdefault(envvars.SAGEMAKER_SUPPRESS_V2_WARNING, "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # "Not applying SDK defaults..."
    import sagemaker

    return sagemaker


def import_estimator() -> type:
    import_sdk()
    from sagemaker.estimator import Estimator

    return Estimator


def unpack(archive: Path, target: Path) -> Path:
    """A job's model.tar.gz / output.tar.gz into `target` (only plain files and directories)."""
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target
