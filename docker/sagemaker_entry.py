"""The script SageMaker's `train` command runs (SAGEMAKER_PROGRAM): one host's part of the job."""

import sys

from procgen_rl.runtime.sagemaker import main

if __name__ == "__main__":
    sys.exit(main())
