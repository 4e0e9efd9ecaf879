"""Cache-aware stage runners, shared by the in-process pipeline and the Dagster assets.

Every stage result is keyed by `(image_id, stage, stage_version)` in the results store, plus the
tags' digest for the stages whose answer depends on the tags (tag parses, fused rows). A
runner takes one batch, looks up the whole batch in one query, computes only the misses, writes
them back in one transaction and returns all results in input order with counts. With no store
(caching off) it simply computes.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from .records import ClipEmbedding, ImageRecord, TagParse

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

STAGE_TAGS = "tag_parses"
STAGE_CLIP = "clip_embeddings"
STAGE_FUSED = "fused_attributes"
FUSED_CODE_VERSION = "fused-2"  # bump when fusion's output (or its cache key's meaning) changes


@dataclass
class StageCounts:
    """What a stage did: results computed now, results found in the cache, inputs that failed."""

    computed: int = 0
    skipped: int = 0
    failed: int = 0

    def __iadd__(self, other: "StageCounts") -> "StageCounts":
        self.computed += other.computed
        self.skipped += other.skipped
        self.failed += other.failed
        return self

    def to_dict(self) -> dict[str, int]:
        return {"computed": self.computed, "skipped": self.skipped, "failed": self.failed}


@dataclass(frozen=True)
class Codec(Generic[Out]):
    """How one stage's result is stored: `encode(result) -> (payload, blob)` and back."""

    encode: Callable[[Out], tuple[dict, bytes | None]]
    decode: Callable[[str, dict, bytes | None], Out]
    is_failure: Callable[[Out], bool] = lambda _r: False  # failures are returned, never cached


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector while a batch of cached results is decoded.

    Decoding a batch allocates tens of thousands of small objects (dicts, lists, floats from the
    JSON payloads). Each burst of allocations triggers the collector, and its older generations walk
    every tracked object of the process (hundreds of thousands once torch is imported): measured,
    that tripled the cost of decoding. Decoded payloads hold no reference cycles, so reference
    counting frees them all the same; the collector resumes (if it was on) when the last pause in
    any thread ends.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


NO_TAGS = "-"  # the tags key of an item without tags (an empty key means "does not depend on tags")


def tags_key(digest: str | None) -> str:
    """The tags part of a cache key: the tags' digest, or `NO_TAGS`."""
    return digest or NO_TAGS


def run_cached(
    items: Sequence[In],
    image_id: Callable[[In], str],
    compute: Callable[[list[In]], Iterable[Out]],
    codec: Codec[Out],
    store,  # charattr_core.store.ResultStore | None
    stage: str,
    stage_version: str,
    tags_digest: Callable[[In], str | None] | None = None,
) -> tuple[list[Out], StageCounts]:
    """Results for `items` in order: cached ones decoded, the rest computed and stored.

    `compute` must yield exactly one result per input, in order. Duplicate inputs in a batch
    (the same key twice) are computed once. With `tags_digest`, the result depends on the item's
    tags too and is keyed by `(image_id, tags digest)`: the same bytes under other tags are
    another result, and both are kept and reused.
    """
    counts = StageCounts()
    keys: list = [(image_id(x), tags_key(tags_digest(x))) if tags_digest else image_id(x) for x in items]
    with gc_paused():  # one lookup for the batch; see gc_paused for why the collector waits
        cached = store.get_many(stage, stage_version, keys) if store is not None else {}
        results: dict = {}
        for k, c in cached.items():
            image = k[0] if isinstance(k, tuple) else k
            try:
                results[k] = codec.decode(image, c.payload, c.blob)
            except Exception as exc:  # noqa: BLE001 - a malformed cached row is a miss, recomputed
                log.warning("ignoring a malformed cached %s result for image %s (%s: %s); recomputing it",
                            stage, image, type(exc).__name__, exc)
        del cached
    counts.skipped = sum(1 for k in keys if k in results)
    todo, todo_keys, seen = [], [], set(results)
    for item, key in zip(items, keys):
        if key not in seen:
            seen.add(key)
            todo.append(item)
            todo_keys.append(key)
    fresh: list[tuple[object, dict, bytes | None]] = []
    computed = compute(todo) if todo else ()  # an all-cached batch never calls (or loads) the stage
    for key, result in zip(todo_keys, computed, strict=True):
        results[key] = result
        if codec.is_failure(result):
            counts.failed += 1
        else:
            counts.computed += 1
            payload, blob = codec.encode(result)
            fresh.append((key, payload, blob))
    if store is not None and fresh:
        store.put_many(stage, stage_version, fresh)
    return [results[k] for k in keys], counts


# --- codecs of the cached stages -------------------------------------------------------------

TAG_PARSE_CODEC: Codec[TagParse] = Codec(
    encode=lambda p: (p.to_dict(), None),
    decode=lambda _i, payload, _b: TagParse.from_dict(payload),
)


def _encode_embedding(e: ClipEmbedding) -> tuple[dict, bytes | None]:
    assert e.embedding is not None
    vec = np.ascontiguousarray(e.embedding, dtype=np.float16)
    return {"model_key": e.model_key, "dim": int(vec.shape[0])}, vec.tobytes()


def _decode_embedding(image_id: str, payload: dict, blob: bytes | None) -> ClipEmbedding:
    vec = np.frombuffer(blob, dtype=np.float16) if blob else None
    return ClipEmbedding(image_id=image_id, model_key=payload["model_key"], embedding=vec)


EMBEDDING_CODEC: Codec[ClipEmbedding] = Codec(
    encode=_encode_embedding, decode=_decode_embedding, is_failure=lambda e: e.embedding is None)


def ok_records(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Only records that later stages can use."""
    return [r for r in records if r.ok and r.image_id]


def fused_versions(vocabulary, clip_model_key: str | None, probes, policy, strategy: str,
                   thresholds) -> dict[str, str]:
    """Everything a fused row depends on, by name. The in-process pipeline and the Dagster asset
    both call this, so they share cache entries; the fused rows carry it as their `versions`.

    Covered: the code of fusion, the vocabulary, the tag parser, the CLIP model and its zero-shot
    rules, the probes (their weights and settings), the fixed strategy, the thresholds and, with
    a policy, the policy's `fingerprint` (its statistics, its confidence calibration and every one
    of its settings)."""
    from .clip_version import clip_stage_version
    from .clip_zero_shot import zero_shot_version
    from .fusion import FUSION_CODE_VERSION
    from .tags import tags_stage_version

    versions = {"vocabulary": vocabulary.fingerprint, STAGE_TAGS: tags_stage_version(vocabulary),
                "fusion_code": FUSION_CODE_VERSION, "strategy": strategy,
                "thresholds": f"{thresholds.accept!r}/{thresholds.low!r}"}
    if clip_model_key is not None:
        versions[STAGE_CLIP] = clip_stage_version(clip_model_key)
        versions["zero_shot"] = zero_shot_version(clip_model_key, vocabulary)
    if probes is not None:
        versions["attribute_probes"] = probes.probes_version
    if policy is not None:
        versions["fusion_policy"] = f"{policy.version}+{policy.fingerprint}"
    return versions


LEARNED_PARTS = ("attribute_probes", "fusion_policy")  # artefacts that learning assets produce at run time


def fused_code_version(versions: Mapping[str, str]) -> str:
    """`fused-1+<hash12>` over what is fixed when the code is deployed (code, vocabulary, tag and
    CLIP versions, strategy, thresholds): the Dagster code version of fused_attributes."""
    fixed = sorted((k, v) for k, v in versions.items() if k not in LEARNED_PARTS)
    return f"{FUSED_CODE_VERSION}+{hashlib.sha256(repr(fixed).encode()).hexdigest()[:12]}"


def fused_stage_version(versions: Mapping[str, str]) -> str:
    """The cache key (stage_version) of fused rows made under `versions`: the code version, then the
    learned artefacts in use, e.g. `fused-1+8256ab…+probes-1c2d…+policy-3-9f0e…+<fingerprint>`."""
    parts = [fused_code_version(versions)]
    if "attribute_probes" in versions:
        parts.append(f"probes-{hashlib.sha256(versions['attribute_probes'].encode()).hexdigest()[:12]}")
    if "fusion_policy" in versions:
        parts.append(f"policy-{versions['fusion_policy']}")
    return "+".join(parts)


def fused_settings_version(vocabulary, clip_model_key: str | None, strategy: str, thresholds) -> str:
    """What of the fused key is known from the settings alone (no trained artefact): the Dagster
    code version of `fused_attributes` uses it, so changing any of these marks the asset stale."""
    return fused_code_version(fused_versions(vocabulary, clip_model_key, None, None, strategy, thresholds))


def fuse_batch(
    records: Sequence[ImageRecord],
    tag_parses: dict[str, TagParse],
    embeddings: dict[str, np.ndarray],
    *,
    vocabulary,
    zero_shot_scorer: Callable[[np.ndarray], list[dict]] | None,
    probes,
    policy,
    strategy: str,
    thresholds,
    versions: dict[str, str],
    notes: tuple[str, ...] = (),
    image_notes: Mapping[str, tuple[str, ...]] | None = None,
) -> list:
    """Fuse the signals of one batch of ok images into `FusedAttributes`, in input order.

    `tag_parses` maps each record's source_uri (tags belong to the file, not to its bytes) and
    `embeddings` its image_id to that stage's result; an image missing from either simply lacks
    that source. Zero-shot scores and probe predictions are computed here,
    vectorised over the batch, from the embeddings (no second trip through the image encoder).
    `image_notes` adds notes to single images (why CLIP failed for this one). A policy that carries
    a calibration (`FusionPolicy.calibration`) has its confidences calibrated; without one they stay raw.
    """
    from .fusion import FusionContext, fuse  # local: keeps this module importable on its own
    from .learning import visual_estimates

    ids = [r.image_id for r in records]
    clip_est, probe_est = visual_estimates(ids, [embeddings.get(i) for i in ids], zero_shot_scorer, probes)
    calibration = policy.calibration if policy is not None else None  # it travels with its policy
    fused = []
    for r in records:
        parse = tag_parses.get(r.source_uri)
        sources = {name: est for name, est in (
            ("tags", parse.estimates if parse else None),
            ("clip", clip_est.get(r.image_id)),
            ("probe", probe_est.get(r.image_id)),
        ) if est}
        # The same context the policy was trained with (learning.iter_examples).
        context = FusionContext.from_records(parse, r)
        fused.append(fuse(r.image_id, sources, vocabulary, strategy=strategy, thresholds=thresholds,
                          context=context, policy=policy, versions=versions, source_uri=r.source_uri,
                          notes=notes + (image_notes or {}).get(r.image_id, ()), calibration=calibration))
    return fused
