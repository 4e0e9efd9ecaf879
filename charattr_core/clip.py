"""CLIP through open_clip: model loading, the `clip_embeddings` stage, zero-shot scoring.

The public API lives here; the pieces are in `clip_loading.py` (where weights come from, never
hanging on the network), `clip_model.py` (`ClipModel`: image/text encoding) and
`clip_zero_shot.py` (scores from stored embeddings).

    model = load_clip("ViT-B-32", "openai")           # or pretrained="/path/to/weights.safetensors"
    rows = embed_images(records, model, source_load_bytes, batch_size=64, num_workers=4)
    text = model.text_embeddings(vocabulary)           # cached per vocabulary
    estimates = zero_shot(matrix_of_embeddings, vocabulary, text)

`embed_images` overlaps decoding/preprocessing (worker threads; Pillow releases the GIL for most
of the work) with model inference on the calling thread. Workers stop at resized uint8 pixels;
each batch is converted and normalised at once on the model's device (pinned and copied as uint8
on a GPU), with results identical to open_clip's per-image transform. At most
`prefetch_batches + 1` batches are in flight, so memory does not grow with the input.
(benchmarks/bench_clip.py measures the stage against the bare model; benchmarks/RESULTS.md.)
"""

from __future__ import annotations

import functools
import io
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from .batching import batched
from .clip_loading import (
    ALLOW_DOWNLOAD_ENV, RANDOM_WEIGHTS, TINY_MODEL, WeightsSource, clip_model_key, describe_exception, load_clip,
    register_model_configs, resolve_device, resolve_precision, resolve_weights,
)
from .clip_model import ClipModel
from .clip_version import CLIP_CODE_VERSION, clip_stage_version
from .clip_zero_shot import ZERO_SHOT_EVIDENCE, zero_shot, zero_shot_version
from .errors import ConfigError
from .records import ClipEmbedding, ImageRecord
from .sources.hashing import content_hash

__all__ = [
    "ALLOW_DOWNLOAD_ENV", "CLIP_CODE_VERSION", "RANDOM_WEIGHTS", "TINY_MODEL", "ClipModel", "OomBackoffEncoder",
    "WeightsSource", "ZERO_SHOT_EVIDENCE", "clip_model_key", "clip_stage_version", "decode_image", "embed_images",
    "load_clip", "register_model_configs", "resolve_device", "resolve_precision", "resolve_weights", "verified_loader",
    "zero_shot", "zero_shot_version",
]

log = logging.getLogger(__name__)

DEFAULT_PREFETCH_BATCHES = 2
FILE_CHANGED = ("The file changed since it was ingested (its bytes no longer hash to this image's id); "
                "materialize raw_images for its shard again.")


class FileChangedError(Exception):
    """The bytes read now are not the bytes whose hash is the record's image_id."""


def verified_loader(load_bytes: Callable[[ImageRecord], bytes]) -> Callable[[ImageRecord], bytes]:
    """`load_bytes` that re-hashes what it read: for stages that read an image again by its path
    after `raw_images` hashed it, so that a file changed in between never has its result stored
    under the id of the bytes that were ingested (the image becomes a failed row instead)."""
    def load(record: ImageRecord) -> bytes:
        data = load_bytes(record)
        if content_hash(data) != record.image_id:
            raise FileChangedError(FILE_CHANGED)
        return data

    return load


# --------------------------------------------------------------------------------------------
# decoding and preprocessing (runs in worker threads)


# Memory one image may take on its way to the model: its decoded RGBA pixels, a converted copy, and
# the resize to the model's input, whose short side is scaled up to the input size (a 1 x 80,000,000
# strip would become billions of pixels). Larger images fail with the reason instead.
MAX_DECODE_BYTES = 1 << 30


def _check_decode_memory(size: tuple[int, int], min_size: tuple[int, int] | None) -> None:
    width, height = size
    needed = 2 * 4 * width * height
    if min_size is not None and min(width, height) > 0:
        side = min(min_size) / 2  # the model's input side (min_size is twice it)
        needed += int(3 * side * side * max(width, height) / min(width, height))
    if needed > MAX_DECODE_BYTES or min(width, height) == 0:
        raise ValueError(f"a {width}x{height} image needs about {needed / 2**20:,.0f} MiB to prepare for CLIP, over "
                         f"the limit of {MAX_DECODE_BYTES / 2**20:,.0f} MiB (an extreme size or aspect ratio)")


def decode_image(data: bytes, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes to RGB; transparent pixels are composited onto white.

    With `min_size`, JPEGs are decoded at a reduced scale (1/2 .. 1/8, nearly free in the DCT)
    that still keeps both sides at least `min_size`; the caller's resize does the rest.
    """
    with Image.open(io.BytesIO(data)) as image:
        if min_size is not None:
            image.draft("RGB", min_size)
        _check_decode_memory(image.size, min_size)
        image.load()
        # Upright as a viewer sees it (and as raw_images reports width/height).
        image = ImageOps.exif_transpose(image)
        # Anime art often has transparent backgrounds; dropping alpha would turn them black.
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return image.convert("RGB")


def _prepare(record: ImageRecord, *, load_bytes: Callable[[ImageRecord], bytes],
             preprocess: Callable[[Image.Image], np.ndarray | torch.Tensor], min_size: tuple[int, int]
             ) -> np.ndarray | torch.Tensor | str:
    """One image -> its model input, or the one-sentence reason it has none. Never raises."""
    try:
        data = load_bytes(record)
    except FileChangedError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure is this image's, not the batch's
        return f"Could not read the image bytes of {record.source_uri} ({describe_exception(exc)})."
    try:
        image = decode_image(data, min_size)
    except Exception as exc:  # noqa: BLE001
        return f"Could not decode the image for CLIP ({describe_exception(exc)})."
    try:
        return preprocess(image)
    except Exception as exc:  # noqa: BLE001
        return f"Could not preprocess the image for CLIP ({describe_exception(exc)})."


# --------------------------------------------------------------------------------------------
# inference with out-of-memory backoff


# How each runtime says it ran out of memory: PyTorch, ONNX Runtime ("Failed to allocate memory"),
# OpenVINO (std::bad_alloc).
_OOM_MESSAGES = ("out of memory", "failed to allocate memory", "bad_alloc", "bad allocation")


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES))


class OomBackoffEncoder:
    """Encode a batch in chunks of at most `chunk_size`; on out-of-memory, halve the chunk and retry it.

    The smaller chunk size sticks for later batches: memory pressure rarely goes away by itself.
    An out-of-memory error on a single image is re-raised (the model itself does not fit).
    """

    def __init__(self, encode: Callable[[torch.Tensor], np.ndarray], chunk_size: int) -> None:
        self._encode = encode
        self.chunk_size = chunk_size

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        parts: list[np.ndarray] = []
        start = 0
        while start < len(batch):
            chunk = batch[start:start + self.chunk_size]
            try:
                parts.append(self._encode(chunk))
                start += len(chunk)
                continue
            except Exception as exc:
                if not _is_out_of_memory(exc) or len(chunk) == 1:
                    raise
            # Out of the except block, the traceback and the activations its frames held are freed.
            self.chunk_size = max(1, len(chunk) // 2)
            log.warning("CLIP ran out of memory on %d images; retrying in chunks of %d", len(chunk), self.chunk_size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return np.concatenate(parts)


# --------------------------------------------------------------------------------------------
# the stage


def _stack(inputs: list[np.ndarray | torch.Tensor], pin: bool) -> torch.Tensor:
    """One batch tensor from per-image inputs, in pinned memory when it goes to a GPU."""
    if isinstance(inputs[0], np.ndarray):
        out = torch.empty((len(inputs), *inputs[0].shape), dtype=torch.uint8, pin_memory=pin)
        np.stack(inputs, out=out.numpy())  # one copy, straight into the (pinned) batch
        return out
    stacked = torch.stack(inputs)  # type: ignore[arg-type]
    return stacked.pin_memory() if pin else stacked


def _finish_batch(batch: list[ImageRecord], futures: list[Future] | None,
                  prepare: Callable[[ImageRecord], np.ndarray | torch.Tensor | str],
                  encode: OomBackoffEncoder, model_key: str, pin: bool) -> Iterator[ClipEmbedding]:
    prepared = [f.result() for f in futures] if futures is not None else [prepare(r) for r in batch]
    ok = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
    vectors = encode(_stack([prepared[i] for i in ok], pin)) if ok else np.zeros((0, 0), np.float32)  # type: ignore[misc]
    finite = np.isfinite(vectors).all(axis=1)
    stored = vectors.astype(np.float16)  # the storage type; rows are unit vectors, well within range
    row_of = {i: row for row, i in enumerate(ok)}
    for i, record in enumerate(batch):
        row = row_of.get(i)
        if row is None:
            yield ClipEmbedding(record.image_id, model_key, None, error=prepared[i])  # type: ignore[arg-type]
        elif not finite[row]:
            yield ClipEmbedding(record.image_id, model_key, None,
                                error="CLIP produced a non-finite embedding for this image.")
        else:
            yield ClipEmbedding(record.image_id, model_key, stored[row].copy())


def embed_images(records: Iterable[ImageRecord], model: ClipModel, load_bytes: Callable[[ImageRecord], bytes],
                 batch_size: int = 32, num_workers: int = 2, *,
                 prefetch_batches: int = DEFAULT_PREFETCH_BATCHES) -> Iterator[ClipEmbedding]:
    """The `clip_embeddings` stage: one `ClipEmbedding` (float16, L2-normalised) per usable record, in input order.

    Records with `status="failed"` are skipped. An image that cannot be read, decoded or
    preprocessed yields a row with `embedding=None` and the reason in `error`; the rest of its
    batch is unaffected. `num_workers` threads decode and preprocess up to `prefetch_batches`
    batches ahead of inference (0 workers: everything on the calling thread). On CUDA out of
    memory, the batch is retried in halves (see `OomBackoffEncoder`).
    """
    if batch_size < 1 or num_workers < 0 or prefetch_batches < 0:
        raise ConfigError("batch_size must be at least 1, and num_workers and prefetch_batches at least 0.")
    # Decode JPEGs at no less than twice the model input, so the bicubic resize still sees full detail.
    min_size = (2 * model.image_size[1], 2 * model.image_size[0])
    # Workers stop at uint8 pixels where the model allows it; the batch is normalised at once on
    # its device (see ClipModel.encode_tensor).
    to_input = model.prepare_pixels if getattr(model, "accepts_pixels", False) else model.preprocess
    prepare = functools.partial(_prepare, load_bytes=load_bytes, preprocess=to_input, min_size=min_size)
    encode = OomBackoffEncoder(model.encode_tensor, batch_size)
    pin = model.device.type == "cuda"
    usable = (r for r in records if r.ok and r.image_id is not None)
    pool = ThreadPoolExecutor(num_workers, thread_name_prefix="charattr-clip") if num_workers else None
    pending: deque[tuple[list[ImageRecord], list[Future] | None]] = deque()
    try:
        for batch in batched(usable, batch_size):
            pending.append((batch, [pool.submit(prepare, r) for r in batch] if pool else None))
            if len(pending) > prefetch_batches:
                yield from _finish_batch(*pending.popleft(), prepare, encode, model.model_key, pin)
        while pending:
            yield from _finish_batch(*pending.popleft(), prepare, encode, model.model_key, pin)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
