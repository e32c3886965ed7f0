"""SageMaker instance types as data: vCPUs, GPUs and the memory of each GPU, for planning a job's layout.

A cloud job's hosts cannot be measured before they start, and every host of a job must plan the
same layout, so the plan reads the instance types from this table (procgen_rl.layout).

Source: AWS, "Amazon EC2 instance types", https://aws.amazon.com/ec2/instance-types/ (the
General Purpose, Compute Optimized and Accelerated Computing tables: vCPUs, GPUs and GPU memory
per instance size); a SageMaker `ml.` type has the hardware of the EC2 type of the same name.
Not every size is offered for SageMaker training in every region.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    vcpus: int
    gpus: int = 0
    gpu_memory_gib: int = 0  # of each GPU, in GB as AWS lists it
    gpu: str = ""  # the GPU's model


# type: vCPUs, GPUs, memory of each GPU (GB), the GPU's model
INSTANCE_TYPES: dict[str, InstanceType] = {
    "ml.g4dn.xlarge": InstanceType(4, 1, 16, "T4"),
    "ml.g4dn.2xlarge": InstanceType(8, 1, 16, "T4"),
    "ml.g4dn.4xlarge": InstanceType(16, 1, 16, "T4"),
    "ml.g4dn.8xlarge": InstanceType(32, 1, 16, "T4"),
    "ml.g4dn.12xlarge": InstanceType(48, 4, 16, "T4"),
    "ml.g4dn.16xlarge": InstanceType(64, 1, 16, "T4"),
    "ml.g5.xlarge": InstanceType(4, 1, 24, "A10G"),
    "ml.g5.2xlarge": InstanceType(8, 1, 24, "A10G"),
    "ml.g5.4xlarge": InstanceType(16, 1, 24, "A10G"),
    "ml.g5.8xlarge": InstanceType(32, 1, 24, "A10G"),
    "ml.g5.12xlarge": InstanceType(48, 4, 24, "A10G"),
    "ml.g5.16xlarge": InstanceType(64, 1, 24, "A10G"),
    "ml.g5.24xlarge": InstanceType(96, 4, 24, "A10G"),
    "ml.g5.48xlarge": InstanceType(192, 8, 24, "A10G"),
    "ml.p3.2xlarge": InstanceType(8, 1, 16, "V100"),
    "ml.p3.8xlarge": InstanceType(32, 4, 16, "V100"),
    "ml.p3.16xlarge": InstanceType(64, 8, 16, "V100"),
    "ml.p3dn.24xlarge": InstanceType(96, 8, 32, "V100"),
    "ml.p4d.24xlarge": InstanceType(96, 8, 40, "A100"),
    "ml.c5.large": InstanceType(2),
    "ml.c5.xlarge": InstanceType(4),
    "ml.c5.2xlarge": InstanceType(8),
    "ml.c5.4xlarge": InstanceType(16),
    "ml.c5.9xlarge": InstanceType(36),
    "ml.c5.18xlarge": InstanceType(72),
    "ml.c6i.large": InstanceType(2),
    "ml.c6i.xlarge": InstanceType(4),
    "ml.c6i.2xlarge": InstanceType(8),
    "ml.c6i.4xlarge": InstanceType(16),
    "ml.c6i.8xlarge": InstanceType(32),
    "ml.c6i.12xlarge": InstanceType(48),
    "ml.c6i.16xlarge": InstanceType(64),
    "ml.c6i.24xlarge": InstanceType(96),
    "ml.c6i.32xlarge": InstanceType(128),
    "ml.m5.large": InstanceType(2),
    "ml.m5.xlarge": InstanceType(4),
    "ml.m5.2xlarge": InstanceType(8),
    "ml.m5.4xlarge": InstanceType(16),
    "ml.m5.12xlarge": InstanceType(48),
    "ml.m5.24xlarge": InstanceType(96),
}
