"""The unpartitioned assets follow their upstreams through AutomationConditions
(`charattr_dagster.automation`), evaluated as the daemon would with
`evaluate_automation_conditions`."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta, timezone

import dagster as dg

from charattr_dagster.automation import AUTOMATION_SENSOR
from dagster_testing import SHARD_KEYS, register, run_job


def _requested(defs, instance, cursor, when: datetime):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor, evaluation_time=when)
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}, result.cursor


def _clear_of_the_hourly_tick(margin: timedelta = timedelta(minutes=6)) -> datetime:
    """Now, once the next hourly tick is more than `margin` away: the evaluation times below must
    be near the runs' real timestamps, and the first minutes must not cross a tick (a CI run that
    started at 22:59 saw the learning assets requested by the 23:00 tick)."""
    now = datetime.now(timezone.utc)
    next_tick = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if next_tick - now < margin:
        time.sleep((next_tick - now).total_seconds() + 1)
        now = datetime.now(timezone.utc)
    return now


def test_the_report_follows_a_new_shard_and_learning_waits_for_the_hourly_tick(defs, instance, demo_source):
    start = _clear_of_the_hourly_tick()
    register(instance)
    for shard in SHARD_KEYS:
        run_job(defs, instance, "process_shards", [shard])
    run_job(defs, instance, "train_fusion")
    run_job(defs, instance, "report")
    requested, cursor = _requested(defs, instance, None, start)
    assert requested == set()  # everything is up to date

    shutil.copytree(demo_source / SHARD_KEYS[0], demo_source / "shard_new")
    register(instance, ["shard_new"])
    requested, cursor = _requested(defs, instance, cursor, start + timedelta(minutes=1))
    assert requested == set()  # the new shard is not fused yet: the report waits for it
    run_job(defs, instance, "process_shards", ["shard_new"])
    requested, cursor = _requested(defs, instance, cursor, start + timedelta(minutes=2))
    assert requested == {"attribute_report"}  # learning is throttled to the hourly tick
    run_job(defs, instance, "report")
    requested, cursor = _requested(defs, instance, cursor, start + timedelta(minutes=3))
    assert requested == set()
    requested, cursor = _requested(defs, instance, cursor, start + timedelta(hours=1, minutes=3))
    # New shard data since they last ran; the report follows them in the same request.
    assert requested == {"attribute_probes", "fusion_policy", "attribute_report"}


def test_the_automation_sensor_runs_by_default_and_targets_the_unpartitioned_assets(defs):
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    conditions = {spec.key.to_user_string(): spec.automation_condition for spec in defs.resolve_all_asset_specs()}
    assert {k for k, c in conditions.items() if c is not None} == {"attribute_report", "attribute_probes",
                                                                   "fusion_policy"}
