"""The backfill schedule: requests runs for registered shards that some partitioned stage has not
materialized yet (a failed run, a shard added while the sensor was off), skipping shards that a
queued or running run already covers. Missing keys are batched into partition-range runs."""

from __future__ import annotations

import dagster as dg

from .asset_keys import PARTITIONED_ASSETS
from .jobs import process_shards_job
from .partitions import RANGE_END_TAG, RANGE_START_TAG, SHARDS, contiguous_ranges, range_run_request

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


def missing_shards(instance: dg.DagsterInstance, ordered_keys: list[str]) -> list[str]:
    """Registered shards that at least one partitioned stage has not materialized, in partition order."""
    missing: set[str] = set()
    for asset in PARTITIONED_ASSETS:
        done = instance.get_materialized_partitions(dg.AssetKey(asset))
        missing.update(k for k in ordered_keys if k not in done)
    return [k for k in ordered_keys if k in missing]


def shards_in_flight(instance: dg.DagsterInstance, ordered_keys: list[str]) -> set[str]:
    """Shards targeted by runs that are queued or running (a single partition or a range)."""
    position = {k: i for i, k in enumerate(ordered_keys)}
    covered: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        tags = run.tags
        if "dagster/partition" in tags:
            covered.add(tags["dagster/partition"])
        elif tags.get(RANGE_START_TAG) in position and tags.get(RANGE_END_TAG) in position:
            covered.update(ordered_keys[position[tags[RANGE_START_TAG]]: position[tags[RANGE_END_TAG]] + 1])
    return covered


def build_backfill_schedule(shards_per_run: int, cron_schedule: str = "0 3 * * *") -> dg.ScheduleDefinition:
    """Nightly by default; stopped until turned on in the UI."""

    @dg.schedule(job=process_shards_job, cron_schedule=cron_schedule,
                 default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Requests partition-range runs for registered shards that are not materialized "
                             "by every partitioned stage yet.")
    def backfill_missing_shards(context: dg.ScheduleEvaluationContext):
        keys = context.instance.get_dynamic_partitions(SHARDS)
        busy = shards_in_flight(context.instance, keys)
        todo = [k for k in missing_shards(context.instance, keys) if k not in busy]
        if not todo:
            return dg.SkipReason(f"All {len(keys)} registered shards are materialized or in flight.")
        tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "now"
        return [range_run_request(chunk, run_key=f"{tick}:{chunk[0]}...{chunk[-1]}")
                for chunk in contiguous_ranges(todo, keys, shards_per_run)]

    return backfill_missing_shards
