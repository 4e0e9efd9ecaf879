"""Image validation: the `raw_images` stage.

`inspect_image` turns one `SourceItem` into one `ImageRecord`. It decodes the whole image (a
truncated file is only caught by decoding to the end), cheaply for JPEG: `Image.draft` asks
libjpeg for a 1/8-scale decode, which still reads every entropy-coded byte and so still fails on
truncation. It never raises for bad input: a bad image is a `failed` record whose `error` says
why, and any unexpected exception becomes one too, with its class and message.

Recorded facts:
- `image_id`: the content hash of the bytes (same bytes, same id, wherever they live); None only
  when there were no bytes.
- `width` / `height`: as displayed, i.e. after the EXIF orientation (a phone photo stored 4000x3000
  with orientation 6 is 3000x4000), since that is the shape users and models see. Broken EXIF is
  ignored (the stored size is used). Animated images: the first frame, which is what is used.
- `format`: the format found in the bytes (not the file name); MPO (a JPEG with extra pictures)
  is reported as JPEG. Failed records keep whatever was learnt before the failure.
- `max_pixels` is checked per call from the header, before any decoding, and touches no global
  state. Pillow's own process-wide limit (`PIL.Image.MAX_IMAGE_PIXELS`) stays in force as a second
  net and is never changed here; an image over twice that limit is refused even if `max_pixels`
  allows it. Truncation is detected only while `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` is False
  (Pillow's default); nothing in charattr may turn it on.
"""

from __future__ import annotations

import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

from PIL import ExifTags, Image, UnidentifiedImageError

from ..records import ImageRecord, SourceItem
from .base import Source, one_line
from .hashing import content_hash

DEFAULT_MAX_PIXELS = 89_478_485  # = PipelineConfig.max_image_pixels (Pillow's default limit)

Image.init()  # register every plugin now, not lazily from several threads at once
SUPPORTED_FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF") if f in Image.OPEN)
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class _Rejected(Exception):
    """The image is bad; the message is the record's error."""


def inspect_image(item: SourceItem, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageRecord:
    """Validate one item's bytes by a full decode; never raises for bad input."""
    record = ImageRecord(image_id=None, source_uri=item.uri, shard=item.shard, raw_tags=item.tags)
    problem = None
    if item.data is None:
        problem = None if item.error else "no image bytes were read"
    else:
        record.image_id = content_hash(item.data)
        try:
            _decode(item.data, max_pixels, record)
        except _Rejected as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad image must never stop a batch
            problem = f"unexpected {type(exc).__name__} while decoding: {exc}"
    reasons = [one_line(r) for r in (item.error, problem) if r]
    if reasons:
        record.status, record.error = "failed", "; ".join(reasons)
    return record


def read_images(source: Source, shard: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                workers: int = 0) -> Iterator[ImageRecord]:
    """The `raw_images` stage: one record per item of `source`'s `shard`, in reading order.

    With `workers` > 1, images are decoded in that many threads (Pillow releases the GIL while
    decoding); at most 2 x `workers` items are in flight, so memory stays bounded.
    """
    items = source.read(shard)
    if workers <= 1:
        yield from (inspect_image(item, max_pixels) for item in items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raw-images") as pool:
        pending: deque[Future[ImageRecord]] = deque()
        for item in items:
            pending.append(pool.submit(inspect_image, item, max_pixels))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _decode(data: bytes, max_pixels: int, record: ImageRecord) -> None:
    """Fill `record`'s size and format from `data`, decoding it fully; raise `_Rejected` if bad."""
    if not data:
        raise _Rejected("empty file (0 bytes)")
    _check_declared_length(data)
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError:
        raise _Rejected(not_an_image_reason(data)) from None
    except Image.DecompressionBombError as exc:
        raise _Rejected(f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if "truncat" in str(exc).lower():
            raise _Rejected(f"truncated image file (the header is cut short: {exc})") from None
        raise _Rejected(f"corrupt image header: {exc}") from None
    with image:
        record.format = "JPEG" if image.format == "MPO" else image.format
        record.width, record.height = _displayed_size(image)
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise _Rejected(f"decompression bomb: {image.width}x{image.height} = {pixels:,} pixels "
                            f"is over the limit of {max_pixels:,}")
        if image.format in ("JPEG", "MPO"):
            image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
        try:
            image.load()
        except Image.DecompressionBombError as exc:
            raise _Rejected(f"decompression bomb: {exc}") from None
        except OSError as exc:
            if "truncated" in str(exc):
                raise _Rejected(f"truncated image file ({exc})") from None
            raise _Rejected(f"corrupt image data: {exc}") from None
        except (SyntaxError, ValueError, EOFError) as exc:
            raise _Rejected(f"corrupt image data: {exc}") from None
    if record.format == "PNG":
        _verify_png_checksums(data)


def _verify_png_checksums(data: bytes) -> None:
    """PNG chunks carry CRCs, but decoding does not check them, and corrupt compressed data can
    still inflate to the right number of (wrong) pixels; `verify()` checks every chunk."""
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            image.verify()
    except Exception as exc:  # noqa: BLE001 - whatever verify raises, the file is corrupt
        raise _Rejected(f"corrupt image data: {exc}") from None


def _check_declared_length(data: bytes) -> None:
    """RIFF (WebP) states its length up front; a shorter file was cut off. (libwebp only says
    "could not create decoder object", which hides the cause.)"""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 12:
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            raise _Rejected(f"truncated image file (WebP data ends at byte {len(data):,} of {declared:,})")


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # noqa: BLE001 - broken EXIF does not make a broken image
        orientation = None
    if orientation in _ROTATED_ORIENTATIONS:
        return image.height, image.width
    return image.width, image.height


def not_an_image_reason(data: bytes) -> str:
    """Why bytes that no image decoder accepts are not an image, naming what they look like."""
    head = data[:2048]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    signature = _image_signature(head)
    if signature:
        return f"truncated or corrupt image header (the bytes start like {signature}, but the header cannot be read)"
    if text.startswith((b"<!doctype html", b"<html")) or any(t in text for t in (b"<html", b"<head", b"<body")):
        return "not an image (looks like HTML)"
    if text.startswith(b"<?xml") or b"<svg" in text:
        return "not an image (looks like XML or SVG; only raster images are read)"
    if text.startswith(b"%pdf"):
        return "not an image (looks like PDF)"
    if head.startswith(b"PK\x03\x04"):
        return "not an image (looks like a ZIP archive)"
    if _looks_like_text(head):
        return "not an image (looks like JSON)" if text[:1] in (b"{", b"[") else "not an image (looks like text)"
    return f"not an image (unrecognised or unsupported format; starts with {data[:8].hex(' ')})"


def _image_signature(head: bytes) -> str | None:
    """The image format whose magic bytes `head` starts with, if any."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM") and head[6:10] == b"\0\0\0\0":  # BMP: two reserved zero words
        return "BMP"
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    printable = sum(1 for b in head if b >= 32 or b in (9, 10, 13))
    return printable >= 0.95 * len(head)
