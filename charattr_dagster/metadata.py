"""Materialization metadata that every per-shard stage reports the same way.

A run over several shards materializes each of them with the same metadata (one
`MaterializeResult` per step), so the numbers are the run's totals and a `per_shard` table breaks
them down; `partitions_in_run` says how many shards the totals cover.
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

    def __init__(self, asset: str, warehouse: Warehouse) -> None:
        self.asset = asset
        self.warehouse = warehouse
        self.clock = Stopwatch()
        self.total = StageCounts()
        self.rows = 0
        self.per_shard: dict[str, tuple[int, StageCounts]] = {}

    def add(self, shard: str, counts: StageCounts, rows: int) -> None:
        """Record a finished shard."""
        self.per_shard[shard] = (rows, counts)
        self.total += counts
        self.rows += rows

    def metadata(self) -> dict[str, Any]:
        seconds = self.clock.seconds
        processed = self.total.computed + self.total.skipped + self.total.failed
        meta: dict[str, Any] = {
            "rows": self.rows,
            "computed": self.total.computed,
            "skipped": self.total.skipped,
            "failed": self.total.failed,
            "seconds": round(seconds, 3),
            "images_per_second": round(processed / seconds, 2) if seconds > 0 else 0.0,
            "partitions_in_run": len(self.per_shard),
            "location": dg.MetadataValue.path(str(self.warehouse.asset_dir(self.asset))),
            "per_shard": dg.MetadataValue.table(
                records=[dg.TableRecord({"shard": shard, "rows": rows, "computed": c.computed, "skipped": c.skipped,
                                         "failed": c.failed, "path": str(self.warehouse.path(self.asset, shard))})
                         for shard, (rows, c) in self.per_shard.items()],
                schema=dg.TableSchema(columns=[
                    dg.TableColumn("shard", "string"), dg.TableColumn("rows", "int"),
                    dg.TableColumn("computed", "int"), dg.TableColumn("skipped", "int"),
                    dg.TableColumn("failed", "int"), dg.TableColumn("path", "string")])),
        }
        if len(self.per_shard) == 1:
            meta["path"] = dg.MetadataValue.path(str(self.warehouse.path(self.asset, next(iter(self.per_shard)))))
        return meta
