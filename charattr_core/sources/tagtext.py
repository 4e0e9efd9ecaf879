"""Turning the bytes of a tags file (a folder sidecar, a tar member) into a tag string, or a reason.

Accepted: UTF-8 (a BOM is dropped), UTF-16 with a BOM (what Windows Notepad writes) and UTF-32 with a BOM. Refused,
with a reason: files over the size limit, binary content (NUL bytes), other encodings. An empty
file is valid and means "no tags". Surrounding whitespace is stripped.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

MAX_TAGS_BYTES = 1 << 20  # 1 MiB: a Danbooru tag string is a few KiB at most
JSON_TAG_FIELDS = ("tags", "tag_string", "caption", "text")


class TagTextError(ValueError):
    """A tags file cannot be used; the message is the part after "unreadable tags file: "."""


def check_size(name: str, size: int, max_bytes: int = MAX_TAGS_BYTES) -> None:
    if size > max_bytes:
        raise TagTextError(f"{name} is {size:,} bytes, over the limit of {max_bytes:,} bytes for a tags file")


def decode_tag_text(raw: bytes, name: str, max_bytes: int = MAX_TAGS_BYTES) -> str:
    """The tag string in `raw` (the content of the tags file `name`); raises `TagTextError`."""
    check_size(name, len(raw), max_bytes)
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: FF FE 00 00 starts like FF FE
        try:
            return _no_nul(raw.decode("utf-32").strip(), name)
        except UnicodeDecodeError as exc:
            raise TagTextError(f"{name} has a UTF-32 byte-order mark but is not valid UTF-32 ({exc.reason})") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return _no_nul(raw.decode("utf-16").strip(), name)
        except UnicodeDecodeError as exc:
            raise TagTextError(f"{name} has a UTF-16 byte-order mark but is not valid UTF-16 ({exc.reason})") from None
    if b"\x00" in raw:
        raise TagTextError(f"{name} contains NUL bytes, so it is binary, not text")
    try:
        return raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise TagTextError(
            f"{name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None


def _no_nul(text: str, name: str) -> str:
    if "\x00" in text:
        raise TagTextError(f"{name} contains NUL characters, so it is binary, not text")
    return text


def tags_from_json(raw: bytes, name: str, max_bytes: int = MAX_TAGS_BYTES) -> str | None:
    """The tags in a JSON metadata file (first of `JSON_TAG_FIELDS`); None when it has none."""
    try:
        doc = json.loads(decode_tag_text(raw, name, max_bytes) or "null")
    except json.JSONDecodeError as exc:
        raise TagTextError(f"{name} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict):
        return None
    for field in JSON_TAG_FIELDS:
        if doc.get(field) is not None:
            return tag_value_to_text(doc[field], f"{name} field {field!r}")
    return None


def tag_value_to_text(value: Any, where: str) -> str:
    """A tags value from structured data: a string as is, a list of tags joined with ", "."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        # ", " not " ": list elements may contain spaces ("long hair"), and the tag parser
        # reads comma-separated tags as well as Danbooru's space-separated ones.
        return ", ".join(v.strip() for v in value)
    raise TagTextError(f"{where} holds {type(value).__name__}, not a string or a list of strings")

