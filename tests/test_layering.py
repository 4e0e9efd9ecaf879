"""The architecture rules of `.importlinter`, checked on every test run: charattr_core never
imports Dagster (it must run where Dagster is not installed), and the learning and product
assets never import each other (what they share lives in `assets/zero_shot.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# In a child process: import-linter configures logging with dictConfig, which disables every
# logger that already exists in the process (the store's among them) for the tests after it.
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def test_import_contracts_are_kept():
    done = subprocess.run([sys.executable, "-c", LINT, str(ROOT / ".importlinter")], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout  # both contracts were found and checked
