"""Helpers shared by the Dagster-layer tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import dagster as dg

from charattr_dagster.partitions import SHARDS, range_tags
from charattr_dagster.settings import Settings

IMAGES_PER_SHARD = 3
SHARD_KEYS = ("shard_000", "shard_001")


def make_settings(source: Path, root: Path, **changes) -> Settings:
    values = dict(source=str(source), model_name="charattr-tiny", pretrained=None,
                  database_url=f"sqlite:///{root / 'charattr.db'}", warehouse=str(root / "warehouse"),
                  reports=str(root / "reports"), device="cpu", clip_batch_size=8)
    values.update(changes)
    return Settings(**values)


def register(instance: dg.DagsterInstance, keys: Sequence[str] = SHARD_KEYS) -> None:
    instance.add_dynamic_partitions(SHARDS, list(keys))


def run_job(defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str,
            keys: Sequence[str] | None = None, *, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Execute a job in process: unpartitioned, for one shard, or for a range of shards."""
    job = defs.resolve_job_def(job_name)
    if keys is None:
        return job.execute_in_process(instance=instance, raise_on_error=raise_on_error)
    if len(keys) == 1:
        return job.execute_in_process(instance=instance, partition_key=keys[0], raise_on_error=raise_on_error)
    return job.execute_in_process(instance=instance, tags=range_tags(keys), raise_on_error=raise_on_error)


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The metadata values of the (first) materialization of `asset` in a run."""
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        if mat.asset_key == dg.AssetKey(asset):
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} was not materialized in run {result.run_id}")


def materialized_assets(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_materialization_data.materialization.asset_key.to_user_string()
            for e in result.get_asset_materialization_events()}


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """`<asset>.<check>` -> its evaluation in a run."""
    return {f"{e.asset_key.to_user_string()}.{e.check_name}": e for e in result.get_asset_check_evaluations()}
