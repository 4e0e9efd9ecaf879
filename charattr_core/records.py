"""The records that flow between stages. Plain dataclasses with `to_dict()`; no Dagster types.

Stage functions take and yield these; the store and the Parquet writers serialise them with
`to_dict()` / `from_dict()`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping
from urllib.parse import quote, unquote

import numpy as np
import xxhash

from .schema import UNKNOWN, Vocabulary

Status = Literal["ok", "failed"]
SOURCES = ("tags", "clip", "probe")  # the signals fusion combines


@dataclass(slots=True)
class SourceItem:
    """What a reader yields: one image's bytes (or the reason they could not be read) and tags."""

    uri: str
    shard: str
    data: bytes | None
    tags: str | None = None
    error: str | None = None  # set when the bytes or the sidecar could not be read

    def __post_init__(self) -> None:
        # A file name that is not UTF-8 (`caf\xe9.png`) reaches Python as a surrogate escape, which
        # no database, CSV or JSON writer accepts: the uri is made text (see `text_uri`), the
        # error readable.
        self.uri = text_uri(self.uri)
        if self.error is not None:
            self.error = printable_text(self.error)


FILE_URI = "file://"


def text_uri(uri: str) -> str:
    """`uri` unchanged when it is valid text; else (a non-UTF-8 file name) a `file://` uri with
    the raw bytes percent-encoded. Plain uris are absolute paths (they start with "/") or name a
    memory image, so the two kinds never collide; `raw_uri` inverts it."""
    try:
        uri.encode("utf-8")
        return uri
    except UnicodeEncodeError:
        return FILE_URI + quote(uri.encode("utf-8", "surrogateescape"), safe="/#=+-_.~:@!$&'()*,;")


def raw_uri(uri: str) -> str:
    """The uri a reader made (with surrogate escapes) from what `text_uri` gave."""
    return unquote(uri[len(FILE_URI):], errors="surrogateescape") if uri.startswith(FILE_URI) else uri


def printable_text(text: str) -> str:
    """`text` with surrogate escapes shown as `\\xe9`, so that it can be written anywhere."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def tags_digest(raw_tags: str | None) -> str | None:
    """A short digest of a tag text (None without tags): results that depend on the tags as well as
    the bytes (tag parses, fused rows) are cached with it, so edited tags are never answered from
    the cache."""
    return xxhash.xxh3_64_hexdigest(raw_tags.encode("utf-8", "surrogatepass")) if raw_tags else None


@dataclass(slots=True)
class ImageRecord:
    """One row of `raw_images`. Images are referenced by `source_uri`, never copied."""

    image_id: str | None  # content hash of the bytes; None only when no bytes could be read
    source_uri: str
    shard: str
    width: int | None = None
    height: int | None = None
    format: str | None = None
    raw_tags: str | None = None
    status: Status = "ok"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def tags_digest(self) -> str | None:
        return tags_digest(self.raw_tags)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImageRecord":
        return cls(**{k: d.get(k) for k in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(slots=True)
class AttributeEstimate:
    """One source's (or the fusion's) answer for one attribute of one image.

    `scores` are per-value probabilities: a distribution for single-valued attributes,
    independent probabilities for multi-valued ones. `values` is the answer drawn from them
    (`("unknown",)` when there is none) and `confidence` how sure the source is of it.
    """

    attribute: str
    values: tuple[str, ...] = (UNKNOWN,)
    confidence: float = 0.0
    evidence: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def is_unknown(self) -> bool:
        return not self.values or self.values == (UNKNOWN,)

    @property
    def value(self) -> str:
        """The single answer (first value) — for single-valued attributes."""
        return self.values[0] if self.values else UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "values": list(self.values), "confidence": float(self.confidence),
                "evidence": list(self.evidence), "scores": {k: float(v) for k, v in self.scores.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AttributeEstimate":
        return cls(attribute=d["attribute"], values=tuple(d.get("values") or (UNKNOWN,)),
                   confidence=float(d.get("confidence", 0.0)), evidence=tuple(d.get("evidence") or ()),
                   scores=dict(d.get("scores") or {}))


@dataclass(slots=True)
class TagParse:
    """One row of `tag_parses`: what the image's tags say about every attribute."""

    image_id: str
    estimates: dict[str, AttributeEstimate]
    tag_count: int = 0
    character_count: int | None = None  # None when the tags do not say

    @property
    def multi_character(self) -> bool:
        return (self.character_count or 0) > 1

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "tag_count": self.tag_count, "character_count": self.character_count,
                "estimates": {k: e.to_dict() for k, e in self.estimates.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TagParse":
        est = d["estimates"]
        if isinstance(est, str):
            est = json.loads(est)
        return cls(image_id=d["image_id"], tag_count=int(d.get("tag_count") or 0),
                   character_count=d.get("character_count"),
                   estimates={k: AttributeEstimate.from_dict(e) for k, e in est.items()})


@dataclass(slots=True)
class ClipEmbedding:
    """One row of `clip_embeddings`: the L2-normalised image embedding (float16) or why not."""

    image_id: str
    model_key: str
    embedding: np.ndarray | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "model_key": self.model_key, "error": self.error,
                "embedding": None if self.embedding is None else self.embedding.astype(np.float16).tolist()}


@dataclass(slots=True)
class FusedAttributes:
    """One row of `fused_attributes`: the product."""

    image_id: str
    attributes: dict[str, AttributeEstimate]
    strategy: str  # the configured strategy, or "learned_policy"
    strategies: dict[str, str] = field(default_factory=dict)  # per attribute: the strategy that decided
    confidence: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    source_uri: str | None = None
    notes: tuple[str, ...] = ()  # e.g. "clip unavailable: weights missing"

    def to_dict(self, vocabulary: Vocabulary | None = None, seed_labels: bool = False) -> dict[str, Any]:
        """The seed's output format: `{"Age": "teen", "Hair Color": ["blonde"], ..., "Confidence Score": 0.8}`.

        Keys are the vocabulary's labels ("Skin Tone"); `seed_labels=True` gives the seed's own
        keys where the vocabulary keeps one (`seed_label`: "Ethnicity"). A multi-valued attribute
        is a list, most confident value first; without a vocabulary (which says what is
        multi-valued) every attribute is its most confident value.
        """
        labels = vocabulary.labels(seed=seed_labels) if vocabulary else {}
        multi = {a.key for a in vocabulary.attributes if a.multi} if vocabulary else set()
        out: dict[str, Any] = {}
        for key, est in self.attributes.items():
            shown = [v.replace("_", " ") for v in _most_confident_first(est)] or [UNKNOWN]
            out[labels.get(key, key.replace("_", " ").title())] = shown if key in multi else shown[0]
        out["Confidence Score"] = round(float(self.confidence), 4)
        return out

    def to_flat(self) -> dict[str, Any]:
        """One flat row: `<attribute>` (list of values), `<attribute>_confidence`, provenance columns."""
        row: dict[str, Any] = {"image_id": self.image_id, "source_uri": self.source_uri}
        for key, est in self.attributes.items():
            row[key] = list(est.values)
            row[f"{key}_confidence"] = round(float(est.confidence), 4)
        row["confidence"] = round(float(self.confidence), 4)
        row["strategy"] = self.strategy
        row["attribute_strategies"] = json.dumps(self.strategies, sort_keys=True)
        row["evidence"] = json.dumps({k: list(e.evidence) for k, e in self.attributes.items()}, sort_keys=True)
        row["versions"] = json.dumps(self.versions, sort_keys=True)
        row["notes"] = "; ".join(self.notes)
        return row

    def to_record(self) -> dict[str, Any]:
        """Lossless form for the results store (round-trips through `from_record`)."""
        return {"image_id": self.image_id, "strategy": self.strategy, "strategies": self.strategies,
                "confidence": float(self.confidence), "versions": self.versions, "source_uri": self.source_uri,
                "notes": list(self.notes), "attributes": {k: e.to_dict() for k, e in self.attributes.items()}}

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> "FusedAttributes":
        return cls(image_id=d["image_id"], strategy=d["strategy"], strategies=dict(d.get("strategies") or {}),
                   confidence=float(d.get("confidence", 0.0)), versions=dict(d.get("versions") or {}),
                   source_uri=d.get("source_uri"), notes=tuple(d.get("notes") or ()),
                   attributes={k: AttributeEstimate.from_dict(e) for k, e in d["attributes"].items()})


def _most_confident_first(estimate: AttributeEstimate) -> list[str]:
    """The values of an answer by their score, highest first (ties keep the answer's order)."""
    order = {v: k for k, v in enumerate(estimate.values)}
    return sorted(estimate.values, key=lambda v: (-estimate.scores.get(v, 0.0), order[v]))
