"""The backfill schedule: the sensor's safety net, run nightly.

It registers shards of the source that are not partitions yet (added while the sensor was off)
and requests runs for every shard that needs one (`shard_survey`: new, registered but not
materialized by every stage, or changed since raw_images read it), skipping shards that a queued
or running run already covers.
"""

from __future__ import annotations

import dagster as dg

from charattr_core.errors import CharattrError

from .jobs import process_shards_job
from .partitions import SHARDS
from .resources import SourceResource
from .shard_survey import IN_FLIGHT, missing_shards, shards_in_flight, survey_shards  # noqa: F401 (re-exported)


def build_backfill_schedule(shards_per_run: int, cron_schedule: str = "0 3 * * *") -> dg.ScheduleDefinition:
    """Nightly by default; stopped until turned on in the UI."""

    @dg.schedule(job=process_shards_job, cron_schedule=cron_schedule,
                 default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Registers the source's unseen shards and requests runs for shards that are new, not "
                             "materialized by every partitioned stage, or changed since they were read.")
    def backfill_missing_shards(context: dg.ScheduleEvaluationContext, source: SourceResource):
        try:
            survey = survey_shards(context.instance, source.open())
        except CharattrError as exc:
            return dg.SkipReason(str(exc))
        if survey.new:  # a schedule cannot return partition requests: register them here
            context.instance.add_dynamic_partitions(SHARDS, survey.new)
        if not survey.todo:
            return dg.SkipReason(f"All {len(survey.registered)} registered shards are materialized, unchanged or "
                                 "in flight; no new shards.")
        tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "now"
        context.log.info(survey.summary())
        return survey.run_requests(shards_per_run, tick)

    return backfill_missing_shards
