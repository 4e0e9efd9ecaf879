"""The shard sensor: keeps the partitions in step with the source.

Each tick it registers the source's new shards as partitions and requests runs for every shard
that needs one (`shard_survey`): new shards, registered shards that some stage has not
materialized (a shard registered while the sensor was off, or by the schedule), and shards whose
files changed since raw_images read them. New keys are appended in source order, so
neighbouring shards can share a partition-range run when `shards_per_run` > 1.
"""

from __future__ import annotations

import dagster as dg

from charattr_core.errors import CharattrError

from .jobs import process_shards_job
from .partitions import shards_partitions
from .resources import SourceResource
from .shard_survey import survey_shards


def build_shard_sensor(shards_per_run: int, minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """The sensor over the configured source; stopped until turned on in the UI."""

    @dg.sensor(job=process_shards_job, minimum_interval_seconds=minimum_interval_seconds,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Adds a partition for each new shard of the source and requests runs for new shards, "
                           "registered shards not materialized yet, and shards whose files changed "
                           f"(at most {shards_per_run} shards per run).")
    def shard_sensor(context: dg.SensorEvaluationContext, source: SourceResource) -> dg.SensorResult | dg.SkipReason:
        try:
            survey = survey_shards(context.instance, source.open())
        except CharattrError as exc:
            return dg.SkipReason(str(exc))
        if not survey.todo:
            return dg.SkipReason(f"Nothing to do in {source.path}: {len(survey.registered)} shards registered, "
                                 "all materialized and unchanged (or in flight).")
        requests = survey.run_requests(shards_per_run, "shards")
        context.log.info(f"{survey.summary()} -> {len(requests)} runs")
        return dg.SensorResult(
            dynamic_partitions_requests=[shards_partitions.build_add_request(survey.new)] if survey.new else [],
            run_requests=requests)

    return shard_sensor
