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

import hashlib
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

from .object_store import ParquetAppender, RemotePartitionWriter, RemotePath, RemoteTables, is_url

SUFFIX = ".parquet"
UNPARTITIONED = "_all"  # file stem of an unpartitioned asset's table


# File names are at most 255 bytes on common file systems. A percent-encoded long or CJK shard
# name can exceed that (each CJK character takes 9 bytes), so such a stem is cut and ends in
# HASH_MARK + a digest of the key; the key itself is kept in the file's Parquet metadata.
MAX_STEM_BYTES = 255 - len(SUFFIX)
HASH_MARK = "+"  # `quote` always encodes "+", so a plain stem never contains it
PARTITION_METADATA_KEY = b"charattr.partition"


def partition_file_stem(partition: str | None) -> str:
    """A file name for a partition key. Keys may contain `/` (nested shard files) and may start
    with "." (the folder reader's root shard), which would hide the file; both are escaped."""
    if partition is None:
        return UNPARTITIONED
    stem = quote(partition, safe="-_.=")
    stem = "%2E" + stem[1:] if stem.startswith(".") else stem
    if len(stem) > MAX_STEM_BYTES:  # ASCII after quoting: characters are bytes
        digest = hashlib.sha256(partition.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        stem = f"{stem[:MAX_STEM_BYTES - len(digest) - 1]}{HASH_MARK}{digest}"
    return stem


def _partition_of(path: Path) -> str:
    """The partition key of one warehouse file: from its name, or its metadata for a cut name."""
    stem = path.name[: -len(SUFFIX)]
    if HASH_MARK not in stem:
        return unquote(stem)
    if isinstance(path, RemotePath):
        with path.open("rb") as fh:
            metadata = pq.read_schema(fh).metadata or {}
    else:
        metadata = pq.read_schema(path).metadata or {}
    return metadata.get(PARTITION_METADATA_KEY, b"").decode("utf-8", "surrogateescape") or unquote(stem)


class PartitionWriter(ParquetAppender):
    """Streams record batches into one Parquet file under a temporary name."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self.rows = 0
        # Short and unique, whatever the length of the final name (hidden: never read as a partition).
        self._tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

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
            return sorted(_partition_of(self.remote().path(asset, n)) for n in self.remote().file_names(asset)
                          if n.endswith(SUFFIX) and not n.startswith("."))
        folder = self.asset_dir(asset)
        if not folder.is_dir():
            return []
        return sorted(_partition_of(p) for p in folder.glob("*" + SUFFIX) if not p.name.startswith("."))

    @contextmanager
    def writer(self, asset: str, partition: str | None, schema: pa.Schema) -> Iterator[PartitionWriter]:
        """Write one partition's file; it appears under its real name only if the block succeeds."""
        path = self.path(asset, partition)
        if partition is not None:  # the key, for file names cut to fit (see `partition_file_stem`)
            schema = schema.with_metadata({**(schema.metadata or {}),
                                           PARTITION_METADATA_KEY: partition.encode("utf-8", "surrogateescape")})
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
