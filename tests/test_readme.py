"""The README documents every config key with its default, and every command."""

import re
from pathlib import Path

from imagefs.cli import main
from imagefs.config import DEFAULTS, STORE_DEFAULTS

README = (Path(__file__).parent.parent / "README.md").read_text()


def _config_rows() -> dict[str, str]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_every_config_key_is_documented_with_its_default():
    rows = _config_rows()
    expected = {"data_dir": "/var/lib/imagefs"}
    for section, keys in DEFAULTS.items():
        for key, default in keys.items():
            expected[f"[{section}] {key}"] = _toml(default)
    for key, default in STORE_DEFAULTS.items():
        expected[f"[stores.<name>] {key}"] = _toml(default)
    for key, default in expected.items():
        assert key in rows, f"README does not document {key}"
        if default:  # empty defaults are documented as what they stand for
            assert rows[key] == default, f"README says {key} defaults to {rows[key]}, the code {default}"
    assert set(rows) == set(expected), f"README documents keys the code does not have: {set(rows) - set(expected)}"


def test_every_command_is_documented():
    commands = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    for name, command in main.commands.items():
        if command.hidden:
            continue
        assert re.search(rf"^imagefs {name}\b", commands, re.M), f"README does not document `imagefs {name}`"
