"""The figure pages against the benchmark records they are rendered from: no Ray, no envs."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "render_docs.py"


def load_render_docs():
    spec = importlib.util.spec_from_file_location("render_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figure_pages_match_the_records():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def write(directory: Path, name: str, date: str, overrides: list[str], gpus: list[str], **extra) -> None:
    record = {
        "kind": "bench",
        "measurement": {"experiment": "experiments/ppo-8m.yaml", "overrides": overrides},
        "date": date,
        "commit": "0" * 40,
        "hardware": {"cpu": "CPU", "cores": 2, "gpus": gpus},
        "command": "python benchmarks/bench.py experiments/ppo-8m.yaml",
        "figures": {},
        **extra,
    }
    (directory / name).write_text(json.dumps(record))


def test_each_hardware_class_and_measurement_shows_its_newest_record(tmp_path):
    render_docs = load_render_docs()
    write(tmp_path, "a.json", "2026-01-01", [], [])
    write(tmp_path, "b.json", "2026-01-02T10:00:00Z", [], [])  # newer: replaces a.json
    write(tmp_path, "c.json", "2026-01-01", [], ["NVIDIA H200"])  # another hardware class
    write(tmp_path, "d.json", "2026-01-01", ["seed=1"], [])
    write(tmp_path, "e.json", "2026-01-03", ["seed=1"], [], superseded="code since changed")

    chosen = render_docs.current(render_docs.load(tmp_path), "bench")

    assert {hardware: [r["path"].name for r in records] for hardware, records in chosen.items()} == {
        "1× NVIDIA H200, 2 CPU cores": ["c.json"],
        "2 CPU cores (CPU), no GPU": ["b.json"],  # d.json's measurement left with its superseded newest record
    }
