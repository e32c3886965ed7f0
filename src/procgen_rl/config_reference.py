"""docs/configuration.md, generated from the config dataclasses so the page and the checks agree.

python -m procgen_rl.config_reference           # rewrite the page (from the repository root)
python -m procgen_rl.config_reference --check   # exit 1 when the checked-in page is stale
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from procgen_rl.config import estimate_memory, sections, settings

PAGE = Path("docs/configuration.md")

INTRO = """\
# Configuration reference

<!-- Generated from src/procgen_rl/config.py by `python -m procgen_rl.config_reference`: edit there. -->

An experiment is a YAML file (see `experiments/`) made of the sections below. Every key has a
default, so a file sets only what it changes; a file with no settings at all is refused.

```yaml
env_config:
  env_name: starpilot
algorithm:
  num_envs: 32
```

The same keys, dotted, override a file without editing it. Values are read as YAML scalars, so
`8e6`, `true` and `[16, 32]` work:

```bash
procgen-rl train experiments/ppo-8m.yaml --set env_config.env_name=starpilot --set stop.timesteps_total=1e6
procgen-rl train experiments/ppo-8m.yaml --set 'algorithm.rllib.env_runners={num_gpus_per_env_runner: 0.25}'
```

A SageMaker job takes them as hyperparameters: `experiment` names the file, and every other
hyperparameter is a dotted key, e.g. `{"experiment": "experiments/ppo-8m.yaml",
"env_config.env_name": "starpilot"}`; string values are converted as `--set` converts them.

Every value is checked against the "Allowed" column, and the rules that join keys (in the
descriptions) are checked too, before Ray starts: a bad value is one `error:` line that names
the file, `--set` or hyperparameter, the key, the value and what is allowed. The resolved
experiment is saved as the run's `config.yaml`.
"""


MEMORY = """\
## Memory check

Before Ray starts, `check_memory` refuses an experiment whose frames cannot fit in the host's
memory. What `estimate_memory` counts:

"""


def render() -> str:
    """The whole page: the intro, one section per config dataclass, and the memory check."""
    parts = [INTRO]
    for prefix, cls in sections():
        parts.append(_section(prefix, cls))
    parts.append(f"{MEMORY}{inspect.getdoc(estimate_memory)}\n")
    return "\n".join(parts)


def _section(prefix: str, cls: type) -> str:
    title = f"`{prefix}`" if prefix else "Top level"
    lines = [
        f"## {title}",
        "",
        inspect.getdoc(cls) or "",
        "",
        "| Key | Type | Default | Allowed | Description |",
        "|---|---|---|---|---|",
    ]
    for s in settings(cls):
        key = f"{prefix}.{s.name}" if prefix else s.name
        allowed = str(s.allowed) if s.allowed else _type_values(s.type)
        cells = [f"`{key}`", _type_name(s.type), f"`{_yaml(s.default)}`", allowed, s.doc]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    derived = [(name, member) for name, member in vars(cls).items() if isinstance(member, property)]
    if derived:
        lines += ["", "Derived, not settable:", ""]
        lines += [f"- `{prefix + '.' if prefix else ''}{name}`: {inspect.getdoc(member)}" for name, member in derived]
    return "\n".join(lines) + "\n"


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _type_values(annotation: Any) -> str:
    """What a setting without its own allowed values takes: any value of its type."""
    return {bool: "true, false", str: "a non-empty string", dict: "a mapping"}.get(annotation, "a list of strings")


def _yaml(value: Any) -> str:
    """A default as it would be written in an experiment file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m procgen_rl.config_reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 when {PAGE} differs from the dataclasses")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != page:
            print(f"{PAGE} is stale: run python -m procgen_rl.config_reference", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
