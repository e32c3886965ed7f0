"""Render the figure tables of docs/performance.md and docs/learning.md from benchmarks/records/.

Each table sits between `<!-- records:NAME -->` and `<!-- /records:NAME -->` in its page; the
rest of the page is written by hand. A table shows, for each hardware class and measurement, the
newest record (by date, then file name); a measurement whose newest record is superseded leaves
the page. Every figure links the record it comes from, which holds the commit, the hardware,
the software versions and the exact command.

Usage: python scripts/render_docs.py           rewrite the tables
       python scripts/render_docs.py --check   exit 1, naming the pages, where a table is stale
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "benchmarks" / "records"
DOCS = REPO / "docs"
BLOCK = re.compile(r"(<!-- records:(?P<name>[a-z_]+) -->\n).*?(<!-- /records:(?P=name) -->)", re.DOTALL)
Record = dict[str, Any]


def load(records_dir: Path) -> list[Record]:
    """Every record, oldest first; each gains `path`, its file relative to the repository."""
    records = []
    for path in records_dir.glob("*.json"):
        record = json.loads(path.read_text())
        record["path"] = path
        records.append(record)
    return sorted(records, key=lambda r: (r["date"], r["path"].name))


def hardware_class(hardware: dict[str, Any]) -> str:
    """Machines whose figures compare: the same GPUs and cores, or without a GPU the same CPU and cores."""
    if hardware.get("gpus"):
        gpus = ", ".join(f"{n}× {name}" for name, n in Counter(hardware["gpus"]).items())
        return f"{gpus}, {hardware['cores']} CPU cores"
    return f"{hardware['cores']} CPU cores ({hardware.get('cpu') or 'model not recorded'}), no GPU"


def measurement_key(record: Record) -> str:
    return json.dumps(record["measurement"], sort_keys=True)


def row_order(record: Record) -> tuple:
    """Experiment, then fewer overrides first: each experiment as it is before its variants."""
    what = record["measurement"]
    return what["experiment"], len(what["overrides"]), what["overrides"], json.dumps(what, sort_keys=True)


def current(records: list[Record], kind: str) -> dict[str, list[Record]]:
    """Per hardware class, the newest record of each measurement of `kind`, unless it is superseded."""
    newest: dict[tuple[str, str], Record] = {}
    for record in records:
        if record["kind"] == kind:
            newest[hardware_class(record["hardware"]), measurement_key(record)] = record
    by_class: dict[str, list[Record]] = defaultdict(list)
    for (hardware, _), record in newest.items():
        if "superseded" not in record:
            by_class[hardware].append(record)
    return {hardware: sorted(chosen, key=row_order) for hardware, chosen in sorted(by_class.items())}


def link(record: Record, text: str) -> str:
    """A link from a page in docs/ to the record's file."""
    return f"[{text}](../{record['path'].relative_to(REPO).as_posix()})"


def number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def command(experiment: str, overrides: list[str], script: str, *extra: str) -> str:
    parts = ["python", script, experiment, *extra]
    for override in overrides:
        parts += ["--set", override]
    return f"`{shlex.join(parts)}`"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def notes(records: list[Record]) -> list[str]:
    return [f"- {link(r, r['date'][:10])}: {r['note']}" for r in records if r.get("note")]


def render_kind(
    records: list[Record],
    kind: str,
    header: list[str],
    row: Callable[[Record], list[str]],
) -> str:
    """One table per hardware class, rows in measurement order, the records' notes below each."""
    lines: list[str] = []
    for hardware, chosen in current(records, kind).items():
        lines += [f"**{hardware}**", "", *table(header, [row(r) + [link(r, r["date"][:10])] for r in chosen])]
        lines += ["", *notes(chosen), ""] if any(r.get("note") for r in chosen) else [""]
    return "\n".join(lines).rstrip("\n") + "\n" if lines else "No records yet.\n"


def gib(mib: float | None) -> str:
    """A peak RSS cell: MiB as GiB, or a dash where a record has none."""
    return "–" if mib is None else f"{mib / 1024:.1f} GiB"


def bench_row(r: Record) -> list[str]:
    f = r["figures"]
    return [
        f"`{r['command']}`",
        number(f.get("envs_per_runner")),
        number(f.get("env_steps_per_s")),
        number(f.get("inference_frames_per_s")),
        number(f.get("sampling_steps_per_s")),
        number(f.get("lean_ppo_steps_per_s"), 1),
        number(f.get("training_steps_per_s"), 1),
        number(f.get("ratio"), 2),
        gib(f.get("phases", {}).get("training", {}).get("peak_rss_mib")),
    ]


def train_row(r: Record) -> list[str]:
    f = r["figures"]
    return [
        f"`{r['command']}`",
        number(f["steps_per_s"]),
        number(f.get("steps")),
        number(f.get("seconds")),
        gib(f.get("peak_rss_mib")),
    ]


RUNNERS = ("procgen_rl", "RLlib + pieces", "RLlib defaults")


def env_runner_row(r: Record) -> list[str]:
    step_ms = r["figures"]["step_ms"]
    return [
        f"`{r['command']}`",
        number(r["figures"]["envs_per_runner"]),
        *(number(step_ms.get(name, {}).get("median"), 2) for name in RUNNERS),
    ]


def cluster_row(r: Record) -> list[str]:
    f = r["figures"]
    return [
        f"`{r['command']}`",
        str(r["measurement"]["workers"]),
        f"{f['env_runners']} × {f['envs_per_runner']}",
        number(f["steps_per_s"]),
    ]


def render_learning(records: list[Record]) -> str:
    """One row per experiment, overrides and steps: the lean PPO's (or PPG's) and the harness's newest records."""
    lines: list[str] = []
    for hardware, chosen in current(records, "learning").items():
        rows: dict[str, dict[str, Record]] = defaultdict(dict)
        for r in chosen:
            what = {k: v for k, v in r["measurement"].items() if k != "implementation"}
            rows[json.dumps(what, sort_keys=True)][r["measurement"]["implementation"]] = r
        body = []
        for key, runs in sorted(rows.items(), key=lambda item: seeds_last(json.loads(item[0]))):
            what = json.loads(key)
            plots = [
                r
                for r in records
                if "superseded" not in r
                and r["figures"].get("plot")
                and hardware_class(r["hardware"]) == hardware
                and {k: v for k, v in r["measurement"].items() if k != "implementation"} == what
            ]
            body.append(
                [
                    command(
                        what["experiment"], what["overrides"], "benchmarks/learning.py", "--steps", str(what["steps"])
                    ),
                    learning_cell(runs.get("lean PPO") or runs.get("lean PPG")),
                    learning_cell(runs.get("harness")),
                    f"[plot](../{plots[-1]['figures']['plot']})" if plots else "–",
                ]
            )
        lines += [f"**{hardware}**", "", *table(["command", "lean PPO or PPG", "harness", "curves"], body), ""]
        lines += [*notes(chosen), ""] if any(r.get("note") for r in chosen) else []
    return "\n".join(lines).rstrip("\n") + "\n" if lines else "No records yet.\n"


def seeds_last(what: dict[str, Any]) -> tuple:
    """Rows of one configuration together, by seed: the seed is the last thing that varies."""
    seeds = [o for o in what["overrides"] if o.startswith("seed=")]
    return what["experiment"], what["steps"], [o for o in what["overrides"] if o not in seeds], seeds


def learning_cell(record: Record | None) -> str:
    """Mean return over the second half ± its standard error, then the final mean return."""
    if record is None:
        return "–"
    f = record["figures"]
    text = f"final {f['final_return']:.2f}"
    if "second_half_mean" in f:
        text = f"**{f['second_half_mean']:.2f} ± {f['second_half_stderr']:.2f}**, {text}"
    return f"{text} ({link(record, record['date'][:10])})"


def render_blocks(records: list[Record]) -> dict[str, str]:
    return {
        "bench": render_kind(
            records,
            "bench",
            [
                "command",
                "envs per runner",
                "env",
                "inference",
                "sampling",
                "lean PPO or PPG",
                "training",
                "ratio",
                "peak RSS",
                "record",
            ],
            bench_row,
        ),
        "train": render_kind(
            records, "train", ["command", "env steps/s", "env steps", "seconds", "peak RSS", "record"], train_row
        ),
        "env_runner": render_kind(
            records, "env_runner", ["command", "envs per runner", *RUNNERS, "record"], env_runner_row
        ),
        "cluster": render_kind(
            records, "cluster", ["command", "WORKERS", "env runners × envs", "env steps/s", "record"], cluster_row
        ),
        "learning": render_learning(records),
    }


def render_page(text: str, blocks: dict[str, str]) -> str:
    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in blocks:
            raise SystemExit(f"error: unknown table records:{name}; known: {', '.join(blocks)}")
        return f"{match[1]}\n{blocks[name]}\n{match[3]}"

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 where a page is stale")
    args = parser.parse_args(argv)
    blocks = render_blocks(load(RECORDS))
    stale = []
    for page in (DOCS / "performance.md", DOCS / "learning.md"):
        text = page.read_text()
        rendered = render_page(text, blocks)
        if rendered != text:
            stale.append(page.relative_to(REPO))
            if not args.check:
                page.write_text(rendered)
    if args.check and stale:
        print(f"stale: {', '.join(map(str, stale))}; run `python scripts/render_docs.py`", file=sys.stderr)
        return 1
    for page in stale:
        print(f"rendered {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
