"""The Parquet reader: Hugging Face `datasets` layout, one Parquet file per shard.

The image column holds raw bytes (`binary`) or the `datasets.Image` struct `{bytes, path}`; it is
found by name (`IMAGE_COLUMNS`, case-insensitive), else as the only bytes-like column, or set
with `image_column=`. Tags come from the first of `TAGS_COLUMNS` (or `tags_column=`): a string,
or a list of tags joined with ", ". Rows are streamed in record batches, one row group at a time;
a null or wrong-typed cell, or an unreadable row group, becomes items with errors and reading
goes on. Uris are `<file>#row=<n>`, n counting rows from 0 within the file. A struct cell with
only a `path` (an image stored outside the file) is reported, not followed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError
from ..records import SourceItem, raw_uri
from .base import FileShardSource, SourceReadError, one_line, open_regular_file
from .tagtext import TagTextError, tag_value_to_text

IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")
TAGS_COLUMNS = ("tags", "tag_string", "general_tags", "text", "caption", "prompt")
ROW_MARK = "#row="


@dataclass(frozen=True)
class _Columns:
    image: str
    image_kind: str | None  # "binary", "struct", or None when the column cannot hold image bytes
    image_type: str
    tags: str | None


@dataclass(frozen=True)
class _CachedRowGroup:
    path: Path
    start: int
    stop: int
    images: pa.ChunkedArray
    columns: _Columns


class ParquetSource(FileShardSource):
    """Images (and tags) stored in the rows of Parquet files."""

    kind = "parquet"
    suffix = ".parquet"

    def __init__(self, root: str | Path, *, image_column: str | None = None, tags_column: str | None = None,
                 batch_size: int = 64) -> None:
        super().__init__(root)
        self.image_column = image_column
        self.tags_column = tags_column
        self.batch_size = batch_size  # rows per record batch: bounds memory when rows are large images
        self._lock = threading.Lock()
        self._cached: _CachedRowGroup | None = None  # the last row group `load_bytes` read

    def _wanted(self, path: Path) -> bool:
        """charattr's own outputs (results / failures written into the folder) are not sources."""
        return not is_charattr_output(path)

    def read(self, shard: str) -> Iterator[SourceItem]:
        path = self._shard_file(shard)
        try:
            with open_regular_file(path) as f, pq.ParquetFile(f) as pf:
                cols = self._columns(pf.schema_arrow, path)
                yield from self._read_rows(pf, cols, path, shard)
        except (SourceReadError, ConfigError, OSError, pa.ArrowException) as exc:
            # The whole file is unusable (not a file, not Parquet, no image column): one failed
            # item for it, and the other shards go on.
            yield SourceItem(uri=str(path), shard=shard, data=None, error=f"unreadable parquet file: {one_line(exc)}")

    def _read_rows(self, pf: pq.ParquetFile, cols: "_Columns", path: Path, shard: str) -> Iterator[SourceItem]:
        wanted = [cols.image] + ([cols.tags] if cols.tags else [])
        row = 0
        for group in range(pf.num_row_groups):
            stop = row + pf.metadata.row_group(group).num_rows
            try:
                for batch in pf.iter_batches(batch_size=self.batch_size, row_groups=[group], columns=wanted,
                                             use_threads=False):
                    for item in _batch_items(batch, cols, path, shard, row):
                        yield item
                        row += 1
            except (OSError, pa.ArrowException) as exc:
                reason = f"unreadable parquet row group {group}: {exc}"
                yield from (SourceItem(uri=_uri(path, r), shard=shard, data=None, error=reason)
                            for r in range(row, stop))
            row = stop

    def load_bytes(self, uri: str) -> bytes:
        uri = raw_uri(uri)
        file_part, mark, row_text = uri.rpartition(ROW_MARK)
        if not mark or not row_text.isdigit():
            raise SourceReadError(f"Uri {uri!r} is not a Parquet row uri like <file>{ROW_MARK}<n>.")
        path, row = self._uri_file(file_part), int(row_text)
        group = self._row_group(path, row, uri)
        data, error = _image_bytes(group.images[row - group.start].as_py(), group.columns)
        if error:
            raise SourceReadError(f"Cannot read {uri}: {error}.")
        return data  # type: ignore[return-value]

    def _row_group(self, path: Path, row: int, uri: str) -> _CachedRowGroup:
        """The row group holding `row`; the last one read is kept, since later stages load rows
        in order and one row group serves many calls."""
        with self._lock:
            hit = self._cached
            if hit is not None and hit.path == path and hit.start <= row < hit.stop:
                return hit
            try:
                with open_regular_file(path) as f, pq.ParquetFile(f) as pf:
                    cols = self._columns(pf.schema_arrow, path)
                    start = 0
                    for group in range(pf.num_row_groups):
                        stop = start + pf.metadata.row_group(group).num_rows
                        if row < stop:
                            images = pf.read_row_group(group, columns=[cols.image]).column(0)
                            self._cached = _CachedRowGroup(path, start, stop, images, cols)
                            return self._cached
                        start = stop
            except (OSError, pa.ArrowException, ConfigError) as exc:
                raise SourceReadError(f"Cannot read {uri}: {one_line(exc)}.") from None
            raise SourceReadError(f"Cannot read {uri}: the file has only {start} rows.")

    def _columns(self, schema: pa.Schema, path: Path) -> _Columns:
        """Which columns hold the images and the tags; `ConfigError` when there is no image column."""
        names = schema.names
        listed = ", ".join(names) or "none"
        if self.image_column is not None:
            image = _find(names, (self.image_column,))
            if image is None:
                raise ConfigError(f"Parquet file {path} has no column {self.image_column!r} (columns: {listed}).")
        else:
            image = _find(names, IMAGE_COLUMNS) or _only_bytes_column(schema)
            if image is None:
                raise ConfigError(f"Parquet file {path} has no image column (looked for {', '.join(IMAGE_COLUMNS)}; "
                                  f"columns: {listed}); set image_column to the one holding the image bytes.")
        tags = _find(names, (self.tags_column,) if self.tags_column else TAGS_COLUMNS)
        if self.tags_column is not None and tags is None:
            raise ConfigError(f"Parquet file {path} has no column {self.tags_column!r} (columns: {listed}).")
        for name in (image, tags):
            if name is not None and names.count(name) > 1:
                raise ConfigError(f"Parquet file {path} has {names.count(name)} columns named {name!r}, so which one "
                                  "to read is ambiguous; rename all but one.")
        image_type = schema.field(image).type
        if pa.types.is_dictionary(image_type):  # dictionary-encoded bytes read as plain values
            image_type = image_type.value_type
        return _Columns(image=image, image_kind=_image_kind(image_type), image_type=str(image_type), tags=tags)


def _batch_items(batch: pa.RecordBatch, cols: _Columns, path: Path, shard: str, first_row: int
                 ) -> Iterator[SourceItem]:
    n = batch.num_rows
    images = batch.column(cols.image).to_pylist() if cols.image_kind else [None] * n
    tags = batch.column(cols.tags).to_pylist() if cols.tags else [None] * n
    for i in range(n):
        data, error = _image_bytes(images[i], cols)
        tag_text, tags_error = None, None
        if tags[i] is not None:
            try:
                tag_text = tag_value_to_text(tags[i], f"column {cols.tags!r}")
            except TagTextError as exc:
                tags_error = f"unreadable tags cell: {exc}"
        reasons = [one_line(r) for r in (error, tags_error) if r]
        yield SourceItem(uri=_uri(path, first_row + i), shard=shard, data=data, tags=tag_text,
                         error="; ".join(reasons) or None)


def _image_bytes(value: Any, cols: _Columns) -> tuple[bytes | None, str | None]:
    """(bytes, None) from one image cell, or (None, why not)."""
    if cols.image_kind is None:
        return None, f"image column {cols.image!r} holds {cols.image_type} values, not image bytes"
    if value is None:
        return None, f"image cell in column {cols.image!r} is null"
    if cols.image_kind == "struct":
        if value.get("bytes") is not None:
            return value["bytes"], None
        if value.get("path"):
            return None, f"image cell has no bytes, only a path ({value['path']!r}) that this reader does not follow"
        return None, "image cell has neither bytes nor a path"
    return value, None


def _image_kind(t: pa.DataType) -> str | None:
    if _is_bytes(t):
        return "binary"
    if pa.types.is_struct(t):
        index = t.get_field_index("bytes")
        if index >= 0 and _is_bytes(t.field(index).type):
            return "struct"
    return None


def _is_bytes(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or getattr(pa.types, "is_binary_view", lambda _t: False)(t))


def _only_bytes_column(schema: pa.Schema) -> str | None:
    candidates = [f.name for f in schema
                  if _image_kind(f.type.value_type if pa.types.is_dictionary(f.type) else f.type)]
    return candidates[0] if len(candidates) == 1 else None


def _find(names: list[str], wanted: tuple[str, ...]) -> str | None:
    """The first of `wanted` among `names`, compared case-insensitively."""
    by_lower = {n.lower(): n for n in reversed(names)}
    return next((by_lower[w.lower()] for w in wanted if w.lower() in by_lower), None)


def _uri(path: Path, row: int) -> str:
    return f"{path}{ROW_MARK}{row}"


# Columns that mark a table written by charattr (`charattr batch --out` / `--failures`).
OUTPUT_MARKERS = (frozenset({"image_id", "source_uri", "versions", "strategy"}),
                   frozenset({"source_uri", "image_id", "error"}))


def is_charattr_output(path: Path) -> bool:
    """Whether the Parquet file at `path` is a results or failures table charattr wrote (by its
    columns, so that outputs written before the marker existed are recognised too)."""
    try:
        with open_regular_file(path) as f:
            names = frozenset(pq.read_schema(f).names)
    except (SourceReadError, OSError, pa.ArrowException):
        return False  # reading the shard reports what is wrong with it
    return any(marker <= names for marker in OUTPUT_MARKERS) and not names & {n.lower() for n in IMAGE_COLUMNS}
