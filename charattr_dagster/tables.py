"""The Parquet layouts of the partitioned assets, and streaming joins between them.

`tag_parses` and `clip_embeddings` hold one row per usable `raw_images` row of the same shard,
in the same order (both stages preserve input order). Reading them back is therefore a merge by
position, checked by `image_id`, one batch at a time — no shard-sized dictionary in memory. A
file that does not line up (stale, partial) stops the step with `MisalignedShardError`.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Sequence

import dagster as dg
import numpy as np
import pyarrow as pa

from charattr_core.batching import batched
from charattr_core.learning import Signals
from charattr_core.records import ClipEmbedding, ImageRecord, TagParse
from charattr_core.schema import Vocabulary

from .warehouse import Warehouse

RAW_SCHEMA = pa.schema([
    pa.field("image_id", pa.string()), pa.field("source_uri", pa.string()), pa.field("shard", pa.string()),
    pa.field("width", pa.int32()), pa.field("height", pa.int32()), pa.field("format", pa.string()),
    pa.field("raw_tags", pa.string()), pa.field("status", pa.string()), pa.field("error", pa.string()),
])

CLIP_SCHEMA = pa.schema([
    pa.field("image_id", pa.string()), pa.field("model_key", pa.string()),
    pa.field("embedding", pa.list_(pa.float16())), pa.field("error", pa.string()),
])


def tag_parse_schema(vocabulary: Vocabulary) -> pa.Schema:
    """Flat columns per attribute (for people and reports) plus the lossless `estimates` JSON."""
    fields = [pa.field("image_id", pa.string()), pa.field("tag_count", pa.int32()),
              pa.field("character_count", pa.int32())]
    for attr in vocabulary.attributes:
        fields += [pa.field(attr.key, pa.list_(pa.string())), pa.field(f"{attr.key}_confidence", pa.float32())]
    fields.append(pa.field("estimates", pa.string()))
    return pa.schema(fields)


def tag_parse_row(parse: TagParse) -> dict[str, Any]:
    row: dict[str, Any] = {"image_id": parse.image_id, "tag_count": parse.tag_count,
                           "character_count": parse.character_count}
    for key, est in parse.estimates.items():
        row[key] = list(est.values)
        row[f"{key}_confidence"] = float(est.confidence)
    row["estimates"] = json.dumps({k: e.to_dict() for k, e in parse.estimates.items()}, sort_keys=True)
    return row


def tag_parse_from_row(row: dict[str, Any]) -> TagParse:
    return TagParse.from_dict(row)  # `estimates` is the JSON string; from_dict decodes it


def clip_row(embedding: ClipEmbedding) -> dict[str, Any]:
    return {"image_id": embedding.image_id, "model_key": embedding.model_key, "error": embedding.error,
            "embedding": None if embedding.embedding is None else np.asarray(embedding.embedding, dtype=np.float16)}


class MisalignedShardError(dg.Failure):
    """A signal file of a shard does not line up with its raw_images (a stale file from an earlier
    run, or a partial write): joining them would give images the wrong signals, or none."""


class _Aligner:
    """Matches a signal asset's rows to the shard's usable images. The stages write exactly one row
    per usable `raw_images` row, in the same order, so row i must be image i; anything else fails
    loudly (never a silently dropped source)."""

    def __init__(self, rows: Iterator[dict[str, Any]], asset: str, shard: str):
        self._rows, self._asset, self._shard = rows, asset, shard
        self._position = 0

    def _fail(self, what: str) -> MisalignedShardError:
        return MisalignedShardError(
            f"The {self._asset} file of shard {self._shard!r} does not line up with its raw_images ({what}): "
            f"a stale or partial file; materialize {self._asset} for this shard again.", allow_retries=False)

    def take(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for image_id in ids:
            row = next(self._rows, None)
            if row is None:
                raise self._fail(f"it ends after {self._position} rows, before image {image_id}")
            if row.get("image_id") != image_id:
                raise self._fail(f"row {self._position} is image {row.get('image_id')}, expected {image_id}")
            out.append(row)
            self._position += 1
        return out

    def finish(self) -> None:
        """After the last image: a longer file is misaligned too."""
        if next(self._rows, None) is not None:
            raise self._fail(f"it has more than the {self._position} rows of the shard's usable images")


def _vector(row: dict[str, Any] | None) -> np.ndarray | None:
    if row is None or row["embedding"] is None:
        return None
    return np.asarray(row["embedding"], dtype=np.float16)


def iter_signals(warehouse: Warehouse, shard: str, *, with_tags: bool = True, with_embeddings: bool = True,
                 keep: Callable[[str], bool] | None = None, batch_size: int = 1024) -> Iterator[list[Signals]]:
    """Batches of the shard's usable images joined with their tag parse and embedding.

    `keep(image_id)` selects images (e.g. one split) before their tag parse is decoded."""
    records = (ImageRecord.from_dict(r) for r in warehouse.iter_rows("raw_images", [shard], batch_size=batch_size))
    usable = (r for r in records if r.ok and r.image_id)
    tags = _Aligner(warehouse.iter_rows("tag_parses", [shard], batch_size=batch_size), "tag_parses", shard) \
        if with_tags else None
    clips = _Aligner(warehouse.iter_rows("clip_embeddings", [shard], columns=["image_id", "embedding"],
                                         batch_size=batch_size), "clip_embeddings", shard) if with_embeddings else None
    for batch in batched(usable, batch_size):
        ids = [r.image_id for r in batch]
        tag_rows = tags.take(ids) if tags is not None else [None] * len(ids)
        clip_rows = clips.take(ids) if clips is not None else [None] * len(ids)
        joined = [Signals(record=r, tag_parse=tag_parse_from_row(t) if t is not None else None, embedding=_vector(e))
                  for r, t, e in zip(batch, tag_rows, clip_rows) if keep is None or keep(r.image_id)]
        if joined:
            yield joined
    for aligner in (tags, clips):
        if aligner is not None:
            aligner.finish()
