"""Readers for image collections, and the `raw_images` stage.

    source = open_source("data/my_images")          # folder, Parquet or WebDataset: detected
    for shard in source.shards():                    # one Dagster partition per shard
        for record in read_images(source, shard):    # ImageRecord rows, bad images as `failed`
            ...
    data = source.load_bytes(record.source_uri)      # later stages re-read images by uri
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .base import IMAGE_EXTENSIONS, ROOT_SHARD, Source, SourceReadError, is_hidden, is_image_name, shard_key, shard_relpath
from .folder import FolderSource
from .parquet import ParquetSource, is_charattr_output
from .tagtext import MAX_TAGS_BYTES
from .validate import DEFAULT_MAX_PIXELS, inspect_image, read_images
from .webdataset import WebDatasetSource

__all__ = [
    "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "MAX_TAGS_BYTES", "ROOT_SHARD", "FolderSource", "ParquetSource",
    "Source", "SourceReadError", "WebDatasetSource", "detect_kind", "inspect_image", "open_source", "read_images",
    "shard_key", "shard_relpath",
]

SOURCE_KINDS = {"folder": FolderSource, "parquet": ParquetSource, "webdataset": WebDatasetSource}


def open_source(path: str | os.PathLike[str], *, kind: str | None = None, image_column: str | None = None,
                tags_column: str | None = None, max_tags_bytes: int = MAX_TAGS_BYTES) -> Source:
    """The reader for `path`: a `.parquet` file or a folder of them, `.tar` file(s), or an image folder.

    `kind` ("folder", "parquet", "webdataset") skips detection. `image_column` / `tags_column`
    apply to Parquet, `max_tags_bytes` to sidecar and tar tag files. Raises `ConfigError` when
    the path is missing or holds nothing readable.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise ConfigError(f"Source path {root} does not exist.")
    if kind is not None and kind not in SOURCE_KINDS:
        raise ConfigError(f"Unknown source kind {kind!r}; choose one of: {', '.join(SOURCE_KINDS)}.")
    kind = kind or detect_kind(root)
    if kind == "folder" and not root.is_dir():
        raise ConfigError(f"Source path {root} is a file, but only .parquet and .tar files can be read on their own; "
                          "point at the folder that holds the images instead.")
    if kind == "parquet":
        source: Source = ParquetSource(root, image_column=image_column, tags_column=tags_column)
    elif kind == "webdataset":
        source = WebDatasetSource(root, max_tags_bytes=max_tags_bytes)
    else:
        source = FolderSource(root, max_tags_bytes=max_tags_bytes)
    if not source.shards():
        skipped = getattr(source, "skipped_links", [])
        why = (f" ({len(skipped)} {source.suffix} symlink(s) point outside it and were skipped, e.g. "  # type: ignore[attr-defined]
               f"{skipped[0]})" if skipped else "")
        raise ConfigError(f"Source path {root} holds no readable images, .parquet files or .tar shards{why}.")
    return source


def detect_kind(root: Path) -> str:
    """Which reader fits `root`.

    A file is judged by its suffix. A folder is searched breadth first, level by level (its own
    files, then its sub-folders' files, ...); the first level holding any Parquet, tar or image
    file decides, preferring Parquet, then tar, then images. So a Hugging Face repo (README.md
    plus data/*.parquet) is Parquet, and a huge image tree is recognised without walking it all.
    """
    if root.is_file():
        suffix = root.suffix.lower()
        return {".parquet": "parquet", ".tar": "webdataset"}.get(suffix, "folder")
    level = [root]
    while level:
        found: set[str] = set()
        below: list[Path] = []
        for directory in level:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if is_hidden(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    below.append(Path(entry.path))
                elif entry.name.lower().endswith(".parquet"):
                    if not is_charattr_output(Path(entry.path)):  # results written into the folder
                        found.add("parquet")
                elif entry.name.lower().endswith(".tar"):
                    found.add("webdataset")
                elif is_image_name(entry.name):
                    found.add("folder")
        for kind in ("parquet", "webdataset", "folder"):
            if kind in found:
                return kind
        level = sorted(below)
    return "folder"
