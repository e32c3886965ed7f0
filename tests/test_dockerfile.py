"""The Dockerfile, without building it: lint (hadolint, both variants' stages) and contract lines."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"


def test_dockerfile_lints_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_keeps_the_sagemaker_contract():
    text = DOCKERFILE.read_text()
    for line in (
        'CMD ["train"]',
        "WORKDIR /opt/ml/code",
        "SAGEMAKER_PROGRAM=sagemaker_entry.py",
        "FROM runtime AS variant-cpu",
        "FROM runtime AS variant-gpu",
        "--mount=type=secret,id=cacert",
    ):
        assert line in text, line
    copies = [line for line in text.splitlines() if line.startswith(("COPY", "ADD"))]
    assert not [line for line in copies if "ssl" in line or ".crt" in line or "pip.conf" in line]
