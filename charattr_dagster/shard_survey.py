"""What the shard sensor and the backfill schedule look at: the source's shards against the
instance's partitions.

- new: in the source, not registered as a partition yet;
- missing: registered (and still in the source) but not materialized by every per-shard stage —
  a failed run, or a shard registered while the sensor was off;
- changed: materialized, but the shard's files differ from the fingerprint raw_images recorded
  (a folder that kept filling after it was registered, files replaced or deleted).

Shards that a queued or running run already covers are left out of all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
import xxhash

from charattr_core.sources import Source

from .asset_keys import PARTITIONED_ASSETS
from .fingerprints import changed_shards, recorded_fingerprints, source_fingerprints
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


@dataclass
class ShardSurvey:
    registered: list[str]  # partition order
    new: list[str]  # source order; appended after `registered` when added
    missing: list[str]
    changed: list[str]
    fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def ordered(self) -> list[str]:
        """The partition order once the new shards are added."""
        return [*self.registered, *self.new]

    @property
    def todo(self) -> list[str]:
        """Every shard to materialize, in partition order."""
        wanted = {*self.new, *self.missing, *self.changed}
        return [k for k in self.ordered if k in wanted]

    def summary(self) -> str:
        return (f"{len(self.new)} new, {len(self.missing)} registered but not materialized, "
                f"{len(self.changed)} changed since materialized")

    def run_requests(self, shards_per_run: int, key_prefix: str) -> list[dg.RunRequest]:
        """Runs over `todo`, at most `shards_per_run` neighbouring shards each. A run key names the
        shards and their content, so a changed shard gets a new run and an unchanged one none."""
        requests = []
        for keys in contiguous_ranges(self.todo, self.ordered, shards_per_run):
            content = xxhash.xxh3_64("\n".join(f"{k}={self.fingerprints.get(k, '')}" for k in keys).encode())
            run_key = f"{key_prefix}:{keys[0]}...{keys[-1]}:{content.hexdigest()}"
            requests.append(range_run_request(keys, run_key=run_key))
        return requests


def survey_shards(instance: dg.DagsterInstance, source: Source) -> ShardSurvey:
    """Compare the source's shards (and their current fingerprints) with the instance."""
    found = source.shards()
    registered = instance.get_dynamic_partitions(SHARDS)
    known = set(registered)
    new = [k for k in found if k not in known]
    present = set(found)
    fingerprints = source_fingerprints(source, found)
    busy = shards_in_flight(instance, registered)
    missing = [k for k in missing_shards(instance, registered) if k in present and k not in busy]
    recorded = recorded_fingerprints(instance, [k for k in registered if k in present])
    changed = [k for k in changed_shards({k: fingerprints[k] for k in registered if k in fingerprints}, recorded)
               if k not in busy and k not in missing]
    return ShardSurvey(registered=registered, new=new, missing=missing, changed=changed, fingerprints=fingerprints)
