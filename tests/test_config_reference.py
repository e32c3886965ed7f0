"""docs/configuration.md is generated from the config dataclasses: fail when it is stale."""

from pathlib import Path

from procgen_rl import config_reference
from procgen_rl.config import sections, settings

REPO = Path(__file__).resolve().parent.parent


def test_checked_in_page_is_current():
    page = (REPO / config_reference.PAGE).read_text()
    assert page == config_reference.render(), "stale: run python -m procgen_rl.config_reference"


def test_page_lists_every_key_with_its_allowed_values():
    page = config_reference.render()
    for prefix, cls in sections():
        for s in settings(cls):
            key = f"{prefix}.{s.name}" if prefix else s.name
            assert f"| `{key}` |" in page
            if s.allowed:
                assert str(s.allowed) in page


def test_check_exits_1_on_a_stale_page_and_0_on_a_fresh_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert config_reference.main(["--check"]) == 1
    assert config_reference.main([]) == 0
    assert config_reference.main(["--check"]) == 0
    (tmp_path / config_reference.PAGE).write_text("old\n")
    assert config_reference.main(["--check"]) == 1
    assert "docs/configuration.md is stale" in capsys.readouterr().err
