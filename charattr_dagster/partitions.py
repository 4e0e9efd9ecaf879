"""Partitioning: one dynamic partition per shard of the configured source.

Shard keys come from `Source.shards()` (a sub-folder, a Parquet file, a tar). Keys are added by
the shard sensor, the backfill schedule or `charattr run`, never by hand-written lists. Runs cover
one shard by default (each partition then keeps its own lineage, see `lineage.py`); with
`shards_per_run` > 1 they cover contiguous ranges of keys, for thousands of tiny shards.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import dagster as dg

SHARDS = "shards"
shards_partitions = dg.DynamicPartitionsDefinition(name=SHARDS)

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def contiguous_ranges(keys: Sequence[str], ordered_keys: Sequence[str], max_size: int) -> Iterator[list[str]]:
    """Split `keys` into runs of neighbours in `ordered_keys` (the partition order), each at most
    `max_size` long. A run over a partition range covers every key between its ends, so only
    keys that are adjacent in the partition order may share a range."""
    wanted = set(keys)
    chunk: list[str] = []
    for key in ordered_keys:
        if key in wanted:
            chunk.append(key)
            if len(chunk) == max_size:
                yield chunk
                chunk = []
        elif chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def range_tags(keys: Sequence[str]) -> dict[str, str]:
    """Run tags that make one run materialize the partition range `keys[0]..keys[-1]`."""
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}


def range_run_request(keys: Sequence[str], job_name: str | None = None, run_key: str | None = None) -> dg.RunRequest:
    """A run request for a contiguous range of shards (a single key uses `partition_key`)."""
    if len(keys) == 1:
        return dg.RunRequest(partition_key=keys[0], run_key=run_key, job_name=job_name)
    return dg.RunRequest(tags=range_tags(keys), run_key=run_key, job_name=job_name)
