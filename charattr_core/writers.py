"""Result writers: stream fused rows to Parquet, CSV or JSON Lines (the writer end of
reader -> worker -> writer). Multi-valued attributes are lists in Parquet/JSONL and
`|`-joined strings in CSV."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Iterable, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from .outputs import OUTPUT_SUFFIXES, OutputError, OutputLock, check_output_path, describe_os_error, temp_name
from .schema import Vocabulary

FORMATS = OUTPUT_SUFFIXES


def output_format(path: str | Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise OutputError(f"Output file {path} must end in .parquet, .csv or .jsonl.")
    return fmt


def fused_arrow_schema(vocabulary: Vocabulary) -> pa.Schema:
    """The Parquet schema of fused rows (`FusedAttributes.to_flat()`), derived from the vocabulary."""
    fields: list[pa.Field] = [pa.field("image_id", pa.string()), pa.field("source_uri", pa.string())]
    for attr in vocabulary.attributes:
        fields += [pa.field(attr.key, pa.list_(pa.string())), pa.field(f"{attr.key}_confidence", pa.float32())]
    fields += [pa.field(name, pa.float32() if name == "confidence" else pa.string())
               for name in ("confidence", "strategy", "attribute_strategies", "evidence", "versions", "notes")]
    return pa.schema(fields)


class RowWriter(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


class _ParquetRows:
    def __init__(self, path: Path, schema: pa.Schema):
        self._schema = schema
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


class _CsvRows:
    def __init__(self, path: Path, columns: list[str]):
        self._fh = open(path, "w", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._fh, fieldnames=columns, extrasaction="ignore")
        self._csv.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._csv.writerows({k: "|".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows)

    def close(self) -> None:
        self._fh.close()


class _JsonlRows:
    def __init__(self, path: Path):
        self._fh = open(path, "w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    def close(self) -> None:
        self._fh.close()


class AtomicTableWriter:
    """Streams rows to a uniquely named hidden temporary file beside `path`, in the format its
    suffix names (.parquet, .csv, .jsonl), and renames it to `path` on success, so a crash never
    leaves a file that looks complete and two runs never share a temporary file. While open, it
    holds `OutputLock` on `path`: a second writer of the same file stops with one sentence. On an
    exception inside `with`, the temporary file is removed and an existing `path` is untouched. A
    write error (disk full, ...) becomes `OutputError`."""

    def __init__(self, path: str | Path, schema: pa.Schema):
        self.path = check_output_path(path)
        fmt = output_format(self.path)
        self._lock = OutputLock(self.path).acquire()
        # Holding the lock, no other run writes this output: temporary files of it that exist
        # now were left by a killed run, and go.
        for stale in self.path.parent.glob(f".{glob_escape(self.path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        self._tmp = temp_name(self.path)
        try:
            self._rows: RowWriter = (
                _ParquetRows(self._tmp, schema) if fmt == "parquet"
                else _CsvRows(self._tmp, schema.names) if fmt == "csv"
                else _JsonlRows(self._tmp)
            )
        except BaseException as exc:  # an OSError, or Ctrl-C / SIGTERM while the file was being created
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
            self._lock.release()
            if isinstance(exc, OSError):
                raise self._error(exc) from None
            raise
        self.count = 0

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"Cannot write {self.path}: {describe_os_error(exc)}; nothing was written there.")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        try:
            self._rows.write(rows)
        except OSError as exc:
            raise self._error(exc) from None
        self.count += len(rows)

    def close(self) -> None:
        try:
            self._rows.close()
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self._discard()
            raise self._error(exc) from None
        finally:
            self._lock.release()

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._rows.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        self._discard()
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self.abort() if exc_type else self.close()


class FusedResultWriter(AtomicTableWriter):
    """Fused rows (`FusedAttributes.to_flat()`), written atomically (see `AtomicTableWriter`)."""

    def __init__(self, path: str | Path, vocabulary: Vocabulary):
        super().__init__(path, fused_arrow_schema(vocabulary))


FAILURES_SCHEMA = pa.schema([pa.field("source_uri", pa.string()), pa.field("image_id", pa.string()),
                             pa.field("error", pa.string())])


class FailureWriter(AtomicTableWriter):
    """One row per image that failed: where it is, its content id (None when unreadable) and why."""

    def __init__(self, path: str | Path):
        super().__init__(path, FAILURES_SCHEMA)

    @staticmethod
    def row(record) -> dict[str, Any]:
        """The failure row of a failed `ImageRecord`."""
        return {"source_uri": record.source_uri, "image_id": record.image_id, "error": record.error}
