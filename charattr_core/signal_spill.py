"""A temporary on-disk copy of one source's signals, so that `charattr eval` streams them.

Learning makes many passes over the signals (`probes.train_probes` alone makes `epochs + 2`), and
computing them means reading, hashing and decoding every image. `charattr eval` computes them
once, appends each batch to a Parquet file here, and every later pass reads that file back one
batch at a time: memory holds one batch, never the collection. (The Dagster assets need no spill:
their signals already live in the warehouse.)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .learning import Signals
from .records import ImageRecord, TagParse

SCHEMA = pa.schema([pa.field("image_id", pa.string()), pa.field("record", pa.string()),
                    pa.field("tag_parse", pa.string()), pa.field("embedding", pa.list_(pa.float16()))])


class SignalSpill:
    """Write signal batches once (`write`), then read them back as a `learning.SignalSource`."""

    def __init__(self, folder: str | Path | None = None, batch_size: int = 256) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="charattr-signals-", dir=folder)
        self.path = Path(self._tmp.name) / "signals.parquet"
        self.batch_size = batch_size
        self.images = 0

    def write(self, batches: Iterable[Sequence[Signals]]) -> int:
        """Append every batch; returns the number of images written."""
        with pq.ParquetWriter(self.path, SCHEMA) as out:
            for batch in batches:
                if batch:
                    out.write_table(pa.Table.from_pylist([_row(s) for s in batch], schema=SCHEMA))
                    self.images += len(batch)
        return self.images

    def __call__(self, keep: Callable[[str], bool]) -> Iterator[list[Signals]]:
        """One pass over the spilled signals of the images that `keep` accepts, batch by batch."""
        if not self.path.is_file():
            return
        for record_batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.batch_size):
            rows = [r for r in record_batch.to_pylist() if keep(r["image_id"])]
            if rows:
                yield [_signals(r) for r in rows]

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> "SignalSpill":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _row(s: Signals) -> dict:
    return {"image_id": s.record.image_id, "record": json.dumps(s.record.to_dict()),
            "tag_parse": json.dumps(s.tag_parse.to_dict()) if s.tag_parse is not None else None,
            "embedding": None if s.embedding is None else np.asarray(s.embedding, dtype=np.float16)}


def _signals(row: dict) -> Signals:
    return Signals(record=ImageRecord.from_dict(json.loads(row["record"])),
                   tag_parse=TagParse.from_dict(json.loads(row["tag_parse"])) if row["tag_parse"] else None,
                   embedding=None if row["embedding"] is None else np.asarray(row["embedding"], dtype=np.float16))
