"""The Dagster instance settings charattr needs, written into a fresh DAGSTER_HOME by every entry
point: `charattr run`, `make ui` (`python -m charattr_dagster.instance` before `dagster dev`) and
`prepare_dagster_home()` for anything else that starts Dagster (the future `charattr app`).

An existing dagster.yaml is never touched: it is the user's (PostgreSQL storage, a cluster's
run launcher, ...). Delete it to get these settings back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_DAGSTER_HOME = Path("data/dagster_home")

# Intervals tuned for one local machine: the queue is checked every second instead of every 5 s,
# sensor and backfill work runs in threads, and runs stuck in STARTING are failed (and their GPU
# slots freed) instead of holding the queue forever.
INSTANCE_YAML = """\
# Written by charattr for a new DAGSTER_HOME; edit freely (charattr never overwrites it).
# charattr runs offline by design; re-enable Dagster's usage statistics here if you wish.
telemetry:
  enabled: false
# No "join the community" dialog over every page.
nux:
  enabled: false
concurrency:
  pools:
    # Steps in the "gpu" pool (clip_embeddings) run one at a time.
    default_limit: 1
  runs:
    # Each run loads the CLIP model once; a few at a time keep a laptop's memory in bounds.
    max_concurrent_runs: 4
run_queue:
  dequeue_interval_seconds: 1
  dequeue_use_threads: true
  dequeue_num_workers: 4
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  poll_interval_seconds: 20
  free_slots_after_run_end_seconds: 30
sensors:
  use_threads: true
  num_workers: 4
backfills:
  use_threads: true
  num_workers: 2
  num_submit_workers: 4
"""


def write_instance_settings(home: Path) -> bool:
    """Create `home` and its dagster.yaml when missing; True when the file was written now."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if target.exists():
        return False
    tmp = home / f".dagster.yaml.{os.getpid()}.tmp"
    tmp.write_text(INSTANCE_YAML, encoding="utf-8")
    try:
        os.link(tmp, target)  # atomic, and never replaces a file another process wrote meanwhile
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def prepare_dagster_home(home: str | os.PathLike[str] | None = None) -> Path:
    """`home`, else $DAGSTER_HOME, else data/dagster_home: made absolute, created with charattr's
    dagster.yaml when new, and exported as $DAGSTER_HOME for this process and its children."""
    path = Path(home or os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).expanduser().resolve()
    write_instance_settings(path)
    os.environ["DAGSTER_HOME"] = str(path)
    return path


if __name__ == "__main__":  # `make ui`: prepare $DAGSTER_HOME, print it
    print(prepare_dagster_home(sys.argv[1] if len(sys.argv) > 1 else None))
