"""The shard sensor and the backfill schedule."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import dagster as dg

from charattr_dagster.partitions import RANGE_END_TAG, RANGE_START_TAG, SHARDS
from charattr_dagster.definitions import build_definitions
from dagster_testing import IMAGES_PER_SHARD, SHARD_KEYS, make_settings, materialization, register, run_job


def _tick(defs, instance):
    """One evaluation as the daemon runs it: resources from the definitions, and run requests
    validated against the job's partitions (including those the same tick adds)."""
    sensor = defs.resolve_sensor_def("shard_sensor")
    # An instance *ref*, as the daemon passes: partition keys are then validated against the
    # instance plus the partitions that the same tick adds.
    # As a context manager: the context owns the instance it opens from the ref, and a context
    # left to the garbage collector drops it mid-evaluation ("undefined DagsterInstance").
    with dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs,
                                 resources={"source": defs.resources["source"]}) as context:
        return sensor.evaluate_tick(context)


def _apply(instance, result) -> None:
    """What the daemon does with a tick's partition requests before launching its runs."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def _schedule_tick(defs, instance):
    schedule = defs.resolve_schedule_def("backfill_missing_shards")
    with dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                   resources={"source": defs.resources["source"]},
                                   scheduled_execution_time=datetime(2030, 1, 1, 3, tzinfo=timezone.utc)) as context:
        return schedule.evaluate_tick(context)


def test_the_sensor_registers_new_shards_once_and_requests_one_range_run(instance, demo_source, tmp_path):
    defs = build_definitions(make_settings(demo_source, tmp_path, shards_per_run=2))
    first = _tick(defs, instance)
    [add] = first.dynamic_partitions_requests
    assert add.partitions_def_name == SHARDS and list(add.partition_keys) == list(SHARD_KEYS)
    [request] = first.run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == SHARD_KEYS
    _apply(instance, first)

    # The range request resolves against the partitions added in the same tick: one run, both shards.
    result = defs.resolve_job_def("process_shards").execute_in_process(instance=instance, tags=request.tags)
    assert materialization(result, "raw_images")["run_rows"] == 2 * IMAGES_PER_SHARD
    assert instance.get_materialized_partitions(dg.AssetKey("fused_attributes")) == set(SHARD_KEYS)

    again = _tick(defs, instance)
    assert not again.run_requests and not again.dynamic_partitions_requests and again.skip_message

    shutil.copytree(demo_source / SHARD_KEYS[0], demo_source / "shard_new")
    third = _tick(defs, instance)
    assert list(third.dynamic_partitions_requests[0].partition_keys) == ["shard_new"]
    assert [r.partition_key for r in third.run_requests] == ["shard_new"]


def test_by_default_the_sensor_requests_one_run_per_shard(defs, instance):
    first = _tick(defs, instance)
    assert [r.partition_key for r in first.run_requests] == list(SHARD_KEYS)


def test_the_sensor_skips_with_the_reason_when_the_source_is_missing(instance, tmp_path):
    defs = build_definitions(make_settings(tmp_path / "nowhere", tmp_path))
    result = _tick(defs, instance)
    assert not result.run_requests and "does not exist" in result.skip_message
    assert instance.get_dynamic_partitions(SHARDS) == []


def test_the_schedule_requests_only_missing_partitions(defs, instance, demo_source):
    keys = ["s_a", "s_b", "s_c", "s_d"]
    for key in keys:
        shutil.copytree(demo_source / SHARD_KEYS[0], demo_source / key)
    register(instance, [*SHARD_KEYS, *keys])
    for key in (*SHARD_KEYS, "s_b"):
        for asset in ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=key))
    # s_c lacks only fused_attributes: still missing.
    for asset in ("raw_images", "tag_parses", "clip_embeddings"):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition="s_c"))
    requests = list(_schedule_tick(defs, instance).run_requests)
    assert [r.partition_key for r in requests] == ["s_a", "s_c", "s_d"]  # one shard per run (the default)
    assert len({r.run_key for r in requests}) == len(requests)


def test_the_schedule_skips_when_everything_is_materialized(defs, instance, settings):
    register(instance)
    run_job(defs, instance, "process_shards", list(SHARD_KEYS))
    data = _schedule_tick(defs, instance)
    assert not data.run_requests and data.skip_message
