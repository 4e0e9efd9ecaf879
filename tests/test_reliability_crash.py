"""Crash safety: the process is killed (SIGKILL, no clean-up) in the middle of work, then run again.

After the re-run every image has exactly one result, none lost and none duplicated, work
committed before the crash is reused rather than redone, the results database and the Parquet
output agree, and a half-written output file is never taken for a complete one. The kills are
injected into real subprocesses (`charattr batch`, `charattr run`) by tests/reliability_faults.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from charattr_core.records import FusedAttributes
from charattr_core.sources.hashing import content_hash
from charattr_core.store import ResultStore
from charattr_core.synthetic import write_demo_dataset
from reliability_faults import fault_env

BIN = Path(sys.executable).parent
N_IMAGES, N_SHARDS = 48, 3
PIPELINE_BATCH = 16  # images per pipeline batch, i.e. per cache transaction (the CLI's default is 256)
KILLED = -signal.SIGKILL
TINY = ["--model", "charattr-tiny", "--pretrained", "random", "--device", "cpu"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crash") / "src"
    write_demo_dataset(out, n_images=N_IMAGES, n_shards=N_SHARDS, seed=5, size=64)
    return out


def _image_ids(source: Path) -> set[str]:
    return {content_hash(p.read_bytes()) for p in source.rglob("*.png")}


def _run(argv: list[str], tmp_path: Path, fault: str | None = None, extra_env: dict | None = None,
         timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **(extra_env or {})}
    # Small pipeline batches so that a source of 48 images spans several cache transactions.
    specs = [f"batch:{PIPELINE_BATCH}"] + ([fault] if fault else [])
    env.update(fault_env(tmp_path, ";".join(specs)))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def _stage_counts(stderr: str, stage: str) -> tuple[int, int]:
    """(computed, from cache) of `stage` in the summary that `charattr batch` prints."""
    found = re.search(rf"{stage}: (\d+) computed, (\d+) from cache", stderr)
    assert found, stderr
    return int(found.group(1)), int(found.group(2))


def _assert_output_and_database_agree(out: Path, db_url: str, expected_ids: set[str]) -> None:
    rows = pq.read_table(out).to_pylist()
    ids = [r["image_id"] for r in rows]
    assert len(ids) == len(expected_ids) and set(ids) == expected_ids, "an image is missing or duplicated"
    assert len({r["source_uri"] for r in rows}) == len(rows)
    with ResultStore(db_url) as store:
        versions = store.stage_versions("fused_attributes")
        assert len(versions) == 1, versions
        assert store.count("fused_attributes") == len(expected_ids)  # exactly one cached result per image
        # keyed by image and tags: read them all back (one per image here, each with its own tags)
        cached = {r.image_id: r for r in store.iter_results("fused_attributes", versions[0])}
    assert set(cached) == expected_ids
    for row in rows:
        _assert_same_result(cached[row["image_id"]].payload, row)


def _assert_same_result(payload: dict, row: dict) -> None:
    """A stored fused payload and a Parquet row say the same (the file holds float32 numbers)."""
    for key, value in FusedAttributes.from_record(payload).to_flat().items():
        if key == "source_uri":
            continue
        if isinstance(value, float):
            assert np.float32(value) == np.float32(row[key]), (row["image_id"], key)
        else:
            assert value == row[key], (row["image_id"], key)


# kill point -> what the re-run finds in the cache: (fused results, tag parses, embeddings). Batches
# whose fused results are cached are not looked at again, so their signals do not count here.
CLI_FAULTS = {
    # Killed while CLIP encodes the second batch: the first batch was committed, and so were the
    # second batch's tag parses.
    "kill:encode:4": (PIPELINE_BATCH, PIPELINE_BATCH, 0),
    # Killed inside the second batch's CLIP write transaction, after part of it was sent: the
    # transaction is rolled back whole (no embedding of that batch is found afterwards).
    "kill:write:stage_results:5": (PIPELINE_BATCH, PIPELINE_BATCH, 0),
    # Killed after the complete Parquet temp file was written, before its rename: all was committed.
    "kill:rename:out.parquet:1": (N_IMAGES, 0, 0),
}


@pytest.mark.parametrize("fault", list(CLI_FAULTS))
def test_charattr_batch_killed_then_rerun_loses_and_duplicates_nothing(fault, source, tmp_path):
    out, db_url = tmp_path / "out.parquet", f"sqlite:///{tmp_path / 'cache.db'}"
    argv = [str(BIN / "charattr"), "batch", str(source), "--out", str(out), "--quiet", "--batch-size", "8",
            "--database-url", db_url, *TINY]

    crashed = _run(argv, tmp_path, fault)
    assert crashed.returncode == KILLED, crashed.stderr
    assert not out.exists()  # only the temporary file exists, under a name no reader takes for the output

    rerun = _run(argv, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N_IMAGES} images, 0 failed, {N_IMAGES} rows written" in rerun.stderr
    fused_cached, tags_cached, clip_cached = CLI_FAULTS[fault]
    assert _stage_counts(rerun.stderr, "fused_attributes") == (N_IMAGES - fused_cached, fused_cached)
    assert _stage_counts(rerun.stderr, "tag_parses") == (N_IMAGES - fused_cached - tags_cached, tags_cached)
    assert _stage_counts(rerun.stderr, "clip_embeddings") == (N_IMAGES - fused_cached - clip_cached, clip_cached)
    assert not list(tmp_path.glob(".out.parquet.*"))  # the killed run's temporary file is gone too
    _assert_output_and_database_agree(out, db_url, _image_ids(source))


def test_a_crash_while_rewriting_an_output_leaves_the_previous_file_complete(source, tmp_path):
    out, db_url = tmp_path / "out.parquet", f"sqlite:///{tmp_path / 'cache.db'}"
    argv = [str(BIN / "charattr"), "batch", str(source), "--out", str(out), "--quiet",
            "--database-url", db_url, *TINY]
    first = _run(argv, tmp_path)
    assert first.returncode == 0, first.stderr
    before = pq.read_table(out)

    crashed = _run(argv, tmp_path, "kill:rename:out.parquet:1")
    assert crashed.returncode == KILLED
    assert pq.read_table(out).equals(before)  # the old, complete file: never a half-written one
    _assert_output_and_database_agree(out, db_url, _image_ids(source))


# -- the Dagster layer: `charattr run` ---------------------------------------------------------


def _charattr_run(source: Path, tmp_path: Path, fault: str | None) -> subprocess.CompletedProcess:
    argv = [str(BIN / "charattr"), "run", str(source), "--model", "charattr-tiny", "--pretrained", "random",
            "--device", "cpu", "--batch-size", "8", "--database-url", f"sqlite:///{tmp_path / 'charattr.db'}",
            "--warehouse", str(tmp_path / "warehouse"), "--reports", str(tmp_path / "reports")]
    env = {"DAGSTER_HOME": str(tmp_path / "dagster_home")}
    return _run(argv, tmp_path, fault, env, timeout=400)


def test_charattr_run_killed_at_three_points_then_rerun_is_complete_and_consistent(source, tmp_path):
    from charattr_dagster.warehouse import Warehouse

    warehouse = Warehouse(root=str(tmp_path / "warehouse"))
    shards = sorted(p.name for p in source.iterdir() if p.is_dir())
    # 1. In the middle of clip_embeddings (the second CLIP batch of the run).
    # 2. Inside the results-database transaction of fused_attributes.
    # 3. After fused_attributes wrote a complete temporary Parquet file, before its rename.
    for fault in ("kill:encode:2", "kill:write:fused_attributes:1", "kill:rename:fused_attributes:1"):
        crashed = _charattr_run(source, tmp_path, fault)
        assert crashed.returncode == KILLED, (fault, crashed.stderr[-3000:])
        # Whatever a reader finds under a real name is complete: every row of its shard.
        for asset in ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes"):
            assert set(warehouse.partitions(asset)) <= set(shards), (fault, asset)
            for key in warehouse.partitions(asset):
                assert warehouse.count_rows(asset, [key]) == N_IMAGES // N_SHARDS, (fault, asset, key)
        if fault.startswith("kill:rename"):  # the complete temporary file is there, and ignored
            assert list((tmp_path / "warehouse" / "fused_attributes").glob(".*.tmp"))
            assert warehouse.partitions("fused_attributes") == []

    final = _charattr_run(source, tmp_path, None)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Traceback" not in final.stderr
    # The killed runs were marked failed; had they kept the "gpu" pool's slot, this run would hang.
    assert "run(s) of an earlier, killed `charattr run` marked failed" in final.stderr
    expected = _image_ids(source)
    for asset in ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes"):
        assert warehouse.partitions(asset) == shards, asset
        ids = [r["image_id"] for r in warehouse.iter_rows(asset, columns=["image_id"])]
        assert len(ids) == N_IMAGES and set(ids) == expected, asset
    fused = {r["image_id"]: r for r in warehouse.iter_rows("fused_attributes")}
    with ResultStore(f"sqlite:///{tmp_path / 'charattr.db'}") as store:
        version = _latest_fused_version(tmp_path / "dagster_home")
        stored = {r["image_id"]: r for r in store.iter_fused(version)}
        assert set(stored) == expected  # the database holds the same images as the Parquet files...
        for image_id, row in stored.items():  # ...with the same results
            assert row["strategy"] == fused[image_id]["strategy"]
            _assert_same_result(row["payload"], fused[image_id])
        for stage in ("tag_parses", "clip_embeddings"):
            (stage_version,) = store.stage_versions(stage)
            assert store.count(stage, stage_version) == N_IMAGES


def _latest_fused_version(home: Path) -> str:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("fused_attributes"))
    assert event is not None
    return event.asset_materialization.metadata["stage_version"].value


def test_release_crashed_runs_fails_only_runs_of_dead_charattr_processes_on_this_machine():
    import socket

    import dagster as dg
    from dagster._core.storage.dagster_run import DagsterRun

    from charattr_dagster.runner import RUN_HOST_TAG, RUN_PID_TAG, release_crashed_runs

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = finished.stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    here = socket.gethostname()
    runs = {
        "dead": {RUN_HOST_TAG: here, RUN_PID_TAG: dead_pid},
        "alive": {RUN_HOST_TAG: here, RUN_PID_TAG: str(alive.pid)},
        "other_machine": {RUN_HOST_TAG: "elsewhere", RUN_PID_TAG: dead_pid},
        "not_charattrs": {},
    }
    try:
        with dg.instance_for_test() as instance:
            for name, tags in runs.items():
                instance.add_run(DagsterRun(job_name=name, run_id=f"{name}-run", status=dg.DagsterRunStatus.STARTED,
                                            tags=tags))
            assert release_crashed_runs(instance) == ["dead-run"]
            status = {name: instance.get_run_by_id(f"{name}-run").status for name in runs}
    finally:
        alive.kill()
        alive.wait()
    assert status == {"dead": dg.DagsterRunStatus.FAILURE, "alive": dg.DagsterRunStatus.STARTED,
                      "other_machine": dg.DagsterRunStatus.STARTED, "not_charattrs": dg.DagsterRunStatus.STARTED}
