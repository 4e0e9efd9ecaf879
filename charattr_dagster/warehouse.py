"""Parquet warehouse: one file per asset and partition, `<root>/<asset>/<partition>.parquet`.

Why a resource and not an IO manager (DESIGN.md names `io_managers.py`): an IO manager receives
the whole output object of a step and hands the whole input object to the next, so a shard of
embeddings (or, for the learning stages, every shard) would sit in memory at once; and Dagster's
`UPathIOManager` refuses outputs that span several partitions, which every batched range run
produces. Here assets own their storage instead: they stream rows into a `PartitionWriter`
batch by batch, return a `MaterializeResult`, and downstream assets declare `deps=` for lineage
and stream the files back with `iter_batches` (pyarrow.dataset), never loading a whole table.

A file is written under a temporary name and renamed when complete, so a crashed step never
leaves a file that a reader would take for a finished partition.

`root` may also be an fsspec URL (`s3://bucket/prefix`, `gs://...`, `file://...`): the tables
then go through `object_store.py` (which says what still holds there), and the learned
artefacts go to the shared folder `artifacts`.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence
from urllib.parse import quote, unquote

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import PrivateAttr

from .object_store import RemotePartitionWriter, RemoteTables, is_url

SUFFIX = ".parquet"
UNPARTITIONED = "_all"  # file stem of an unpartitioned asset's table


def partition_file_stem(partition: str | None) -> str:
    """A file name for a partition key. Keys may contain `/` (nested shard files) and may start
    with "." (the folder reader's root shard), which would hide the file; both are escaped."""
    if partition is None:
        return UNPARTITIONED
    stem = quote(partition, safe="-_.=")
    return "%2E" + stem[1:] if stem.startswith(".") else stem


class PartitionWriter:
    """Streams record batches into one Parquet file under a temporary name."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    def write_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append a batch of rows (dicts keyed by the schema's column names)."""
        if rows:
            self.write_table(pa.Table.from_pylist(list(rows), schema=self.schema))

    def write_table(self, table: pa.Table | pa.RecordBatch) -> None:
        if table.num_rows:
            if isinstance(table, pa.RecordBatch):
                table = pa.Table.from_batches([table])
            self._writer.write_table(table)
            self.rows += table.num_rows

    def commit(self) -> None:
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


class Warehouse(dg.ConfigurableResource):
    """Where the assets' tables live: `<root>/<asset>/<partition>.parquet`."""

    root: str
    artifacts: Optional[str] = None  # learned artefacts' shared folder when `root` is a URL

    _remote: Optional[RemoteTables] = PrivateAttr(default=None)

    def remote(self) -> Optional[RemoteTables]:
        """The fsspec tables when `root` is a URL, else None."""
        if self._remote is None and is_url(self.root):
            self._remote = RemoteTables(self.root)
        return self._remote

    def asset_dir(self, asset: str) -> Path:
        """The folder of one asset (also where unpartitioned artefacts such as probes live)."""
        if is_url(self.root):
            if not self.artifacts:
                from charattr_core.errors import ConfigError
                raise ConfigError(f"The warehouse {self.root} is on object storage; set CHARATTR_WAREHOUSE_ARTIFACTS "
                                  "to a folder every machine shares, for the probes and the policy.")
            return Path(self.artifacts) / asset
        return Path(self.root) / asset

    def path(self, asset: str, partition: str | None = None) -> Path:
        remote = self.remote()
        if remote is not None:
            return remote.path(asset, partition_file_stem(partition) + SUFFIX)  # a RemotePath
        return self.asset_dir(asset) / (partition_file_stem(partition) + SUFFIX)

    def has(self, asset: str, partition: str | None = None) -> bool:
        return self.path(asset, partition).is_file()

    def partitions(self, asset: str) -> list[str]:
        """The partition keys that have a complete file, sorted."""
        if self.remote() is not None:
            return sorted(unquote(n[: -len(SUFFIX)]) for n in self.remote().file_names(asset)
                          if n.endswith(SUFFIX) and not n.startswith("."))
        folder = self.asset_dir(asset)
        if not folder.is_dir():
            return []
        return sorted(unquote(p.name[: -len(SUFFIX)]) for p in folder.glob("*" + SUFFIX)
                      if not p.name.startswith("."))

    @contextmanager
    def writer(self, asset: str, partition: str | None, schema: pa.Schema) -> Iterator[PartitionWriter]:
        """Write one partition's file; it appears under its real name only if the block succeeds."""
        path = self.path(asset, partition)
        if self.remote() is not None:
            writer = RemotePartitionWriter(path, schema)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = PartitionWriter(path, schema)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def dataset(self, asset: str, partitions: Iterable[str] | None = None) -> ds.Dataset | None:
        """A lazy pyarrow dataset over the given partitions' files (all when None); missing files
        are left out. None when there is no file at all."""
        keys = self.partitions(asset) if partitions is None else list(partitions)
        if self.remote() is not None:
            paths = [self.path(asset, k) for k in keys if self.has(asset, k)]
            return self.remote().dataset(paths) if paths else None
        files = [str(self.path(asset, k)) for k in keys if self.has(asset, k)]
        return ds.dataset(files, format="parquet") if files else None

    def iter_batches(self, asset: str, partitions: Iterable[str] | None = None, *,
                     columns: Sequence[str] | None = None, batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
        """Stream record batches of an asset over the given partitions (all when None)."""
        dataset = self.dataset(asset, partitions)
        if dataset is None:
            return
        yield from dataset.to_batches(columns=list(columns) if columns else None, batch_size=batch_size)

    def iter_rows(self, asset: str, partitions: Iterable[str] | None = None, *,
                  columns: Sequence[str] | None = None, batch_size: int = 4096) -> Iterator[dict[str, Any]]:
        """Stream rows as dicts (one batch in memory at a time)."""
        for batch in self.iter_batches(asset, partitions, columns=columns, batch_size=batch_size):
            yield from batch.to_pylist()

    def count_rows(self, asset: str, partitions: Iterable[str] | None = None) -> int:
        dataset = self.dataset(asset, partitions)
        return 0 if dataset is None else dataset.count_rows()
