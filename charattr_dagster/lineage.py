"""Upstream pointers that name a partition's own upstream events.

Dagster records, on each materialization, `dagster/input_event_pointer/<dep>` (and the input's
data version): the event the step read. For a partitioned dependency it takes the dependency's
*latest* event of any partition, so fusing shard_000 alone after shard_003 was ingested points
at shard_003's raw_images; in a run over several partitions, every partition also shares one
data version and one set of pointers (dagster-io/dagster#18649). A materialization's tags
override those Dagster computed, so a one-shard run states the same shard's upstream events
here. A range run cannot (its tags are shared by all its partitions), which is why the sensor
and the schedule launch one shard per run by default (see the README's "Dagster UI").
"""

from __future__ import annotations

from typing import Iterable

import dagster as dg
from dagster._core.definitions.data_version import (extract_data_version_from_entry, get_input_data_version_tag,
                                                    get_input_event_pointer_tag)


def own_partition_input_tags(instance: dg.DagsterInstance, deps: Iterable[str], partition: str) -> dict[str, str]:
    """Input pointer and data-version tags naming `partition`'s latest event of each of `deps`
    (partitioned upstream assets); a dependency never materialized for it is left to Dagster."""
    tags: dict[str, str] = {}
    for dep in deps:
        key = dg.AssetKey(dep)
        latest = instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                             {partition})
        if partition not in latest:
            continue
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=[latest[partition]]), limit=1).records
        tags[get_input_event_pointer_tag(key)] = str(record.storage_id)
        version = extract_data_version_from_entry(record.event_log_entry)
        if version is not None:
            tags[get_input_data_version_tag(key)] = version.value
    return tags


def lineage_tags(context: dg.AssetExecutionContext, deps: Iterable[str]) -> dict[str, str] | None:
    """Tags for a partitioned asset's materialization: in a one-shard run, pointers to the same
    shard's upstream events; otherwise None (Dagster's own, shared by the run's partitions)."""
    keys = context.partition_keys
    if len(keys) != 1:
        return None
    return own_partition_input_tags(context.instance, deps, keys[0]) or None
