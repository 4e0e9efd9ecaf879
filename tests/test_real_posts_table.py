"""docs/parser-on-real-posts.md is what the parser answers today (skipped without ../shared/data)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CHARATTR_SHARED_DATA") or ROOT.parent / "shared" / "data")

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not (DATA / "posts" / "danbooru_posts.jsonl").is_file(), reason=f"{DATA} is absent"),
]


def _script():
    spec = importlib.util.spec_from_file_location("real_posts_table", ROOT / "scripts" / "real_posts_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_real_posts_table_in_docs_is_current():
    script = _script()
    assert len(script.POSTS) == 30 and len({p for p, _ in script.POSTS}) == 30
    text = script.render(DATA)
    assert (ROOT / "docs" / "parser-on-real-posts.md").read_text(encoding="utf-8") == text, \
        "docs/parser-on-real-posts.md is out of date: run python scripts/real_posts_table.py"


def test_check_mode_reports_a_stale_table(tmp_path):
    script = _script()
    stale = tmp_path / "table.md"
    stale.write_text("old\n", encoding="utf-8")
    assert script.main(["--data", str(DATA), "--out", str(stale), "--check"]) == 1
    assert script.main(["--data", str(DATA), "--out", str(stale)]) == 0
    assert script.main(["--data", str(DATA), "--out", str(stale), "--check"]) == 0
