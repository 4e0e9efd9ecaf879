"""The warehouse's Parquet tables on any fsspec filesystem: `s3://bucket/prefix` (s3fs),
`gs://bucket/prefix` (gcsfs), `file:///shared/path`, `memory://` (tests). Read back through
pyarrow datasets over the same filesystem, streamed batch by batch as on a local disk.

What still holds on an object store, and what does not:
- A table is written under a hidden temporary name (`.<random>.tmp`) and moved to its
  real name when complete, so a reader never takes a partial file for a finished partition,
  and a failed write leaves the previous complete file as it was.
- On a local or shared filesystem the move is a rename: atomic. On S3 and GCS there is no
  rename: the move is a copy then a delete. The copy appears whole or not at all, but a crash
  between the two leaves the temporary object behind (readers ignore hidden names; delete
  `.*.tmp` objects at leisure), and the data is written twice.
- Two writers of the same partition at once: the last move wins (as locally).
- The learned artefacts (probes, policy, evaluation files) are folders of small files written
  with local-filesystem operations; with a warehouse on an object store they live in the
  `artifacts` folder, which must be shared by every machine (docs/cluster.md).
"""

from __future__ import annotations

import uuid
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def is_url(root: str) -> bool:
    """True for `scheme://...` locations (handled by fsspec), False for plain paths."""
    return "://" in str(root)


class RemotePath:
    """The few `pathlib.Path` operations that readers of a warehouse file use, over fsspec."""

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def open(self, mode: str = "rb"):
        return self.fs.open(self.path, mode)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def __fspath__(self) -> str:  # for code that insists on a path: the URL
        return str(self)


class RemoteTables:
    """`<root>/<asset>/<stem>.parquet` on an fsspec filesystem."""

    def __init__(self, root_url: str):
        import fsspec
        import pyarrow.fs as pafs

        from charattr_core.errors import ConfigError

        try:
            self.fs, self.root = fsspec.core.url_to_fs(root_url)
        except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
            raise ConfigError(f"Cannot open the warehouse at {root_url}: {exc} "
                              "(install charattr[s3] or charattr[gcs] for s3:// and gs://).") from None
        self.root = self.root.rstrip("/")
        self.arrow_fs = pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    def path(self, asset: str, file_name: str) -> RemotePath:
        return RemotePath(self.fs, f"{self.root}/{asset}/{file_name}")

    def file_names(self, asset: str) -> list[str]:
        folder = f"{self.root}/{asset}"
        if not self.fs.isdir(folder):
            return []
        return [p.rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)]

    def dataset(self, paths: Sequence[RemotePath]) -> ds.Dataset:
        return ds.dataset([p.path for p in paths], format="parquet", filesystem=self.arrow_fs)


class ParquetAppender:
    """Appends row batches to `self._writer` (a `pq.ParquetWriter` over a temporary file) and
    counts them; the local and the object-store partition writers differ only in where the
    temporary file lives and how it is moved into place."""

    schema: pa.Schema
    rows: int
    _writer: pq.ParquetWriter

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


class RemotePartitionWriter(ParquetAppender):
    """The object-store twin of `warehouse.PartitionWriter`: same methods, same guarantees where
    the store allows (see the module docstring)."""

    def __init__(self, path: RemotePath, schema: pa.Schema):
        self.path, self.schema, self.rows = path, schema, 0
        folder = path.path.rsplit("/", 1)[0]
        path.fs.makedirs(folder, exist_ok=True)
        self._tmp = f"{folder}/.{uuid.uuid4().hex}.tmp"  # short whatever the final name; hidden
        self._file = path.fs.open(self._tmp, "wb")
        self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")

    def commit(self) -> None:
        self._writer.close()
        self._file.close()
        self.path.fs.mv(self._tmp, self.path.path)

    def abort(self) -> None:
        self._writer.close()
        self._file.close()
        if self.path.fs.exists(self._tmp):
            self.path.fs.rm(self._tmp)
