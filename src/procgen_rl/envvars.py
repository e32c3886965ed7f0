"""Every environment variable procgen-rl reads or sets, by name, in one place.

Values are read where they are used; this module only names them, so a grep for a variable
finds its one definition and the docs can list them all.
"""

# Where new run directories go (the CLI's and the compose cluster's results root).
RESULTS_DIR = "RESULTS_DIR"
# A launcher's name for this host (algo-1, ray-worker...); Ray workers inherit it for per-host metrics.
HOST_LABEL = "PROCGEN_RL_HOST"
# The run directory a compose head trains once its Ray node is up (docker/docker-compose.yml).
HEAD_RUN = "PROCGEN_RL_RUN"
# The image compose starts (docker/docker-compose.yml).
IMAGE = "PROCGEN_RL_IMAGE"
# Ray: the cluster a driver joins, and the shared secret every node of a multi-node cluster presents.
RAY_ADDRESS = "RAY_ADDRESS"
RAY_AUTH_TOKEN = "RAY_AUTH_TOKEN"
RAY_AUTH_MODE = "RAY_AUTH_MODE"
# Ray Tune (a benchmark suite): trials keep the working directory; log lines of trials are not merged.
RAY_CHDIR_TO_TRIAL_DIR = "RAY_CHDIR_TO_TRIAL_DIR"
RAY_DEDUP_LOGS = "RAY_DEDUP_LOGS"
# SageMaker: the /opt/ml root (movable for tests), and the script the training toolkit runs.
SAGEMAKER_BASE_DIR = "SAGEMAKER_BASE_DIR"
SAGEMAKER_PROGRAM = "SAGEMAKER_PROGRAM"
# The SageMaker SDK v2's own switch for its v2-deprecation notices.
SAGEMAKER_SUPPRESS_V2_WARNING = "SAGEMAKER_SUPPRESS_V2_WARNING"
# `procgen-rl cloud`: the execution role, the bucket, and a registry to push to instead of ECR's.
SAGEMAKER_ROLE = "SAGEMAKER_ROLE"
SAGEMAKER_BUCKET = "SAGEMAKER_BUCKET"
REGISTRY = "PROCGEN_RL_REGISTRY"
# boto3's own: the region, and no EC2 metadata probes in local mode.
AWS_REGION = "AWS_REGION"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
AWS_EC2_METADATA_DISABLED = "AWS_EC2_METADATA_DISABLED"
