"""The command-line reference in docs/cli.md is generated from the app and must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_cli_reference.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_readme_links_the_reference_and_shows_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/cli.md" in readme
    first_block = readme.split("```")[1]
    assert "make run" in first_block and "make test" in first_block
