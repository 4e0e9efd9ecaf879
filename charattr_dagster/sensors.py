"""The shard sensor: registers the source's new shards as partitions and requests their runs.

New keys are appended to the dynamic partitions in source order in the same tick, so they are
contiguous and can be requested as partition-range runs of at most `shards_per_run` shards each
(one run launch per range instead of one per shard).
"""

from __future__ import annotations

import dagster as dg

from charattr_core.errors import CharattrError

from .jobs import process_shards_job
from .partitions import SHARDS, contiguous_ranges, range_run_request, shards_partitions
from .resources import SourceResource


def build_shard_sensor(shards_per_run: int, minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    """The sensor over the configured source; stopped until turned on in the UI."""

    @dg.sensor(job=process_shards_job, minimum_interval_seconds=minimum_interval_seconds,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Adds a partition for each new shard of the source and requests partition-range runs "
                           f"of at most {shards_per_run} shards.")
    def shard_sensor(context: dg.SensorEvaluationContext, source: SourceResource) -> dg.SensorResult | dg.SkipReason:
        try:
            found = source.open().shards()
        except CharattrError as exc:
            return dg.SkipReason(str(exc))
        known = context.instance.get_dynamic_partitions(SHARDS)
        known_set = set(known)
        new = [key for key in found if key not in known_set]
        if not new:
            return dg.SkipReason(f"No new shards in {source.path} ({len(found)} known).")
        ranges = list(contiguous_ranges(new, [*known, *new], shards_per_run))
        context.log.info(f"{len(new)} new shards -> {len(ranges)} runs")
        return dg.SensorResult(
            dynamic_partitions_requests=[shards_partitions.build_add_request(new)],
            run_requests=[range_run_request(keys, run_key=f"shards:{keys[0]}...{keys[-1]}") for keys in ranges])

    return shard_sensor
