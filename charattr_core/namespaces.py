"""One source, one namespace.

Each source (a folder, a Parquet file or folder, a set of tars) gets a namespace,
`<readable name>-<8 hex of its resolved path's hash>`, and its own folder
`<data_dir>/sources/<namespace>/` for everything derived from it alone: its warehouse (with the
probes and policy learned from it), its reports and its Dagster instance (partitions, runs).
The results database is shared, because results are keyed by image content; its product table
keeps each source's rows under the source's namespace.

A folder that the user names explicitly (`--warehouse`, `--reports`, $DAGSTER_HOME) may still be
shared by mistake: the first source to use it claims it (`claim`), and another source is refused
with one sentence that says what to do (`check_claim`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .errors import ConfigError

CLAIM_FILE = ".charattr-source.json"


def source_namespace(source: str | os.PathLike[str]) -> str:
    """Distinct for distinct sources, the same for one source however its path is spelled
    (relative, trailing slash, `..`)."""
    path = Path(source).expanduser().resolve()
    name = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")[:40] or "source"
    return f"{name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def source_folder(data_dir: str | os.PathLike[str], source: str | os.PathLike[str]) -> Path:
    """`<data_dir>/sources/<namespace>/`: everything derived from this source alone."""
    return Path(data_dir) / "sources" / source_namespace(source)


def claimed_by(folder: str | os.PathLike[str]) -> dict | None:
    """The source that claimed `folder` ({"source", "namespace"}), or None."""
    try:
        return json.loads((Path(folder) / CLAIM_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_claim(folder: str | os.PathLike[str], source: str, what: str, fix: str) -> None:
    """Raise `ConfigError` when `folder` (the `what`, e.g. "warehouse") belongs to another source;
    `fix` says how to give this source its own."""
    owner = claimed_by(folder)
    if owner and owner.get("namespace") != source_namespace(source):
        raise ConfigError(f"The {what} {folder} holds the results of source {owner.get('source')}, and one "
                          f"{what} serves one source; {fix}.")


def claim(folder: str | os.PathLike[str], source: str) -> None:
    """Mark `folder` as `source`'s (created when missing); a claimed folder keeps its owner."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    if claimed_by(path) is None:
        resolved = str(Path(source).expanduser().resolve())
        (path / CLAIM_FILE).write_text(json.dumps({"source": resolved, "namespace": source_namespace(resolved)}),
                                       encoding="utf-8")
