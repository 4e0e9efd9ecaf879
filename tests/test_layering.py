"""The architecture rules of `.importlinter`, checked on every test run: charattr_core never
imports Dagster (it must run where Dagster is not installed), and the learning and product
assets never import each other (what they share lives in `assets/zero_shot.py`)."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept(capsys):
    code = lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 kept, 0 broken" in out  # both contracts were found and checked
