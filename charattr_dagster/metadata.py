"""Materialization metadata that every per-shard stage reports the same way.

Each partition's materialization carries that shard's own numbers (rows, computed, skipped,
failed, path and whatever the stage adds per shard), attached with
`context.add_asset_metadata(..., partition_key=shard)`; the step's own metadata holds what is
true of the whole run (seconds, throughput, `partitions_in_run`; and in a run over several shards
the totals `run_rows`, `run_computed`, ... and a `run_per_shard` table).
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg

from charattr_core.stages import StageCounts

from .warehouse import Warehouse


class Stopwatch:
    """Wall time of a step, for the throughput metadata."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


class StageLedger:
    """What one step did, per shard and in total: rows written and what the cache saved."""

    def __init__(self, asset: str, warehouse: Warehouse, context: dg.AssetExecutionContext | None = None) -> None:
        self.asset = asset
        self.warehouse = warehouse
        self.context = context
        self.clock = Stopwatch()
        self.total = StageCounts()
        self.rows = 0
        self.per_shard: dict[str, tuple[int, StageCounts]] = {}

    def add(self, shard: str, counts: StageCounts, rows: int, **extra: Any) -> None:
        """Record a finished shard; its partition's materialization gets these numbers and `extra`."""
        self.per_shard[shard] = (rows, counts)
        self.total += counts
        self.rows += rows
        if self.context is not None:
            self.context.add_asset_metadata(
                {"rows": rows, **counts.to_dict(), "path": dg.MetadataValue.path(str(self.warehouse.path(self.asset, shard))),
                 **extra}, partition_key=shard)

    def metadata(self) -> dict[str, Any]:
        seconds = self.clock.seconds
        processed = self.total.computed + self.total.skipped + self.total.failed
        meta: dict[str, Any] = {
            "seconds": round(seconds, 3),
            "images_per_second": round(processed / seconds, 2) if seconds > 0 else 0.0,
            "partitions_in_run": len(self.per_shard),
            "location": dg.MetadataValue.path(str(self.warehouse.asset_dir(self.asset))),
        }
        if len(self.per_shard) > 1:  # a one-shard run's totals are the shard's own numbers
            meta.update({
                "run_rows": self.rows, "run_computed": self.total.computed, "run_skipped": self.total.skipped,
                "run_failed": self.total.failed,
                "run_per_shard": dg.MetadataValue.table(
                    records=[dg.TableRecord({"shard": shard, "rows": rows, "computed": c.computed,
                                             "skipped": c.skipped, "failed": c.failed,
                                             "path": str(self.warehouse.path(self.asset, shard))})
                             for shard, (rows, c) in self.per_shard.items()],
                    schema=dg.TableSchema(columns=[
                        dg.TableColumn("shard", "string"), dg.TableColumn("rows", "int"),
                        dg.TableColumn("computed", "int"), dg.TableColumn("skipped", "int"),
                        dg.TableColumn("failed", "int"), dg.TableColumn("path", "string")])),
            })
        return meta
