"""Issue 15: shards that change after they were registered, partitions that carry their own
numbers and lineage, and the schedule/sensor picking up what the other missed."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from dagster._core.definitions.data_version import get_input_event_pointer_tag

from charattr_core.store import ResultStore
from charattr_dagster.definitions import build_definitions
from charattr_dagster.fingerprints import FINGERPRINT
from charattr_dagster.partitions import SHARDS
from dagster_testing import IMAGES_PER_SHARD, SHARD_KEYS, make_settings, partition_metadata, register, run_job
from test_automation import _apply, _schedule_tick, _tick

PARTITIONED = ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes")


def _run_requests(defs, instance, requests) -> list[dg.ExecuteInProcessResult]:
    job = defs.resolve_job_def("process_shards")
    return [job.execute_in_process(instance=instance, partition_key=r.partition_key, tags=r.tags) for r in requests]


def _product_ids(settings, shard: str) -> set[str]:
    return set(pq.read_table(Path(settings.warehouse) / "fused_attributes" / f"{shard}.parquet",
                             columns=["image_id"]).column(0).to_pylist())


def _add_images(source: Path, shard: str, donor: str, names: list[str]) -> None:
    for name in names:
        for suffix in (".png", ".txt"):
            if (source / donor / f"{name}{suffix}").is_file():  # not every demo image has tags
                shutil.copy(source / donor / f"{name}{suffix}", source / shard / f"{name}{suffix}")


def test_a_shard_that_keeps_filling_is_completed_and_deleted_images_leave_the_product(defs, settings, instance,
                                                                                       demo_source):
    growing, donor = SHARD_KEYS
    first = _tick(defs, instance)
    _apply(instance, first)
    _run_requests(defs, instance, first.run_requests)
    assert not _tick(defs, instance).run_requests

    late = sorted(p.stem for p in (demo_source / donor).glob("*.png"))[:2]
    _add_images(demo_source, growing, donor, late)  # the copy was still running when the sensor ticked
    second = _tick(defs, instance)
    assert [r.partition_key for r in second.run_requests] == [growing]
    [result] = _run_requests(defs, instance, second.run_requests)
    meta = partition_metadata(result, "raw_images")[growing]
    assert meta["rows"] == IMAGES_PER_SHARD + 2
    # Only the new images are computed: the cache knows the rest (and the donor's bytes).
    assert partition_metadata(result, "tag_parses")[growing]["skipped"] == IMAGES_PER_SHARD + 2 - meta["computed"]
    assert len(_product_ids(settings, growing)) == IMAGES_PER_SHARD + 2
    assert not _tick(defs, instance).run_requests  # completed: nothing more to do

    # An image deleted from the shard (and held by no other shard) leaves the product.
    only_here = sorted(p.stem for p in (demo_source / growing).glob("*.png") if p.stem not in late)[0]
    before = _product_ids(settings, growing)
    (demo_source / growing / f"{only_here}.png").unlink()
    third = _tick(defs, instance)
    assert [r.partition_key for r in third.run_requests] == [growing]
    _run_requests(defs, instance, third.run_requests)
    after = _product_ids(settings, growing)
    [gone] = before - after
    store = ResultStore(settings.database_url)
    try:
        stored = {row["image_id"] for row in store.iter_fused()}
    finally:
        store.close()
    assert gone not in stored and after <= stored


def test_each_partition_carries_its_own_numbers_and_fingerprint_in_a_range_run(defs, settings, instance, demo_source):
    _add_images(demo_source, SHARD_KEYS[1], SHARD_KEYS[0],
                [sorted(p.stem for p in (demo_source / SHARD_KEYS[0]).glob("*.png"))[0]])
    register(instance)
    result = run_job(defs, instance, "process_shards", list(SHARD_KEYS))
    raw = partition_metadata(result, "raw_images")
    assert {k: m["rows"] for k, m in raw.items()} == {SHARD_KEYS[0]: IMAGES_PER_SHARD,
                                                      SHARD_KEYS[1]: IMAGES_PER_SHARD + 1}
    assert raw[SHARD_KEYS[0]][FINGERPRINT] != raw[SHARD_KEYS[1]][FINGERPRINT]
    fused = partition_metadata(result, "fused_attributes")
    for shard, meta in fused.items():
        shares = {r.data["images"] for r in meta["value_distribution"].records}
        assert max(shares) <= raw[shard]["rows"], shard  # a shard's distribution counts that shard's images
        assert meta["path"].endswith(f"{shard}.parquet")


def _latest(instance, asset: str, shard: str) -> dg.EventLogRecord:
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[shard]), limit=1).records
    return record


def test_a_partitions_upstream_pointers_and_data_version_name_its_own_shard(defs, instance):
    register(instance)
    for shard in SHARD_KEYS:
        run_job(defs, instance, "ingest_shards", [shard])
    run_job(defs, instance, "train_fusion")
    # Fusing shard_000 after shard_001 was ingested last: Dagster alone would point at shard_001's events.
    run_job(defs, instance, "fuse_shards", [SHARD_KEYS[0]])
    fused = _latest(instance, "fused_attributes", SHARD_KEYS[0]).asset_materialization
    for dep in ("raw_images", "tag_parses", "clip_embeddings"):
        pointer = int(fused.tags[get_input_event_pointer_tag(dg.AssetKey(dep))])
        assert pointer == _latest(instance, dep, SHARD_KEYS[0]).storage_id, dep
    versions = {k: _latest(instance, "raw_images", k).asset_materialization.tags["dagster/data_version"]
                for k in SHARD_KEYS}
    assert len(set(versions.values())) == 2  # each shard's content is its data version


def test_the_schedule_registers_an_unseen_shard_and_requests_it(defs, instance, demo_source):
    register(instance)
    run_job(defs, instance, "process_shards", [SHARD_KEYS[0]])
    run_job(defs, instance, "process_shards", [SHARD_KEYS[1]])
    shutil.copytree(demo_source / SHARD_KEYS[0], demo_source / "shard_late")  # while the sensor was off
    requests = list(_schedule_tick(defs, instance).run_requests)
    assert "shard_late" in instance.get_dynamic_partitions(SHARDS)
    assert [r.partition_key for r in requests] == ["shard_late"]


def test_turning_the_sensor_on_runs_registered_but_unmaterialized_shards(defs, instance):
    register(instance)  # registered (by the schedule, the UI or `charattr run`) while the sensor was off
    result = _tick(defs, instance)
    assert not result.dynamic_partitions_requests
    assert [r.partition_key for r in result.run_requests] == list(SHARD_KEYS)
    _run_requests(defs, instance, result.run_requests)
    assert all(instance.get_materialized_partitions(dg.AssetKey(a)) == set(SHARD_KEYS) for a in PARTITIONED)
    assert not _tick(defs, instance).run_requests


def test_fused_attributes_has_one_version_string_in_code_version_rows_and_metadata(defs, settings, instance):
    code_version = defs.resolve_assets_def("fused_attributes").code_versions_by_key[dg.AssetKey("fused_attributes")]
    register(instance)
    first = run_job(defs, instance, "process_shards", [SHARD_KEYS[0]])  # nothing learned yet
    meta = partition_metadata(first, "fused_attributes")[SHARD_KEYS[0]]
    assert meta["stage_version"] == meta["code_version"] == code_version
    run_job(defs, instance, "train_fusion")
    again = run_job(defs, instance, "fuse_shards", [SHARD_KEYS[0]])
    meta = partition_metadata(again, "fused_attributes")[SHARD_KEYS[0]]
    assert meta["code_version"] == code_version
    # The learned artefacts in use, named after the code version (this tiny source trains a policy).
    assert meta["stage_version"].startswith(code_version + "+policy-")
    store = ResultStore(settings.database_url)
    try:
        assert {row["stage_version"] for row in store.iter_fused()} == {code_version, meta["stage_version"]}
    finally:
        store.close()
