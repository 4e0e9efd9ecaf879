"""What every reader is: the `Source` contract, partition keys, and the bits the readers share.

A source is split into shards; each shard is one Dagster partition. Shard keys are relative
POSIX paths made safe for Dagster (see `shard_key`). `read(shard)` streams `SourceItem`s, and
`load_bytes(uri)` re-reads one image later: images are referenced by uri, never copied.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Iterator
from urllib.parse import unquote

from ..errors import ConfigError
from ..records import SourceItem

# File name suffixes read as images (case-insensitive). The content decides the real format.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})

# The folder reader's shard for the image files that sit loose in the root. Hidden names are
# never sub-folder shards, so this key cannot collide with one; unlike ".", it is also a usable
# file name for IO managers that store one file per partition.
ROOT_SHARD = ".root"

# Characters that Dagster rejects or that break its partition-range syntax ("a...b", "[a, b]",
# multi-partition "x|y"); they are percent-encoded in shard keys, as is "%" itself.
_KEY_UNSAFE = re.compile(r"[%,\[\]|\x00-\x1f\x7f]")
_DOT_RUN = re.compile(r"\.{3,}")


class SourceReadError(OSError):
    """One item cannot be (re-)read; the message is one sentence saying why."""


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    """Hidden entries (".git", ".DS_Store", macOS "._x.jpg" resource forks) are never read."""
    return name.startswith(".")


def shard_key(relpath: str) -> str:
    """A Dagster-safe partition key for a relative POSIX path; `shard_relpath` inverts it."""
    key = _KEY_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", relpath)
    return _DOT_RUN.sub(lambda m: "%2E" * len(m.group()), key)


def shard_relpath(key: str) -> str:
    """The relative POSIX path that `shard_key` encoded."""
    return unquote(key)


def is_within(path: str | Path, root: Path) -> bool:
    """True when `path` (already resolved) is `root` or lies below it."""
    try:
        return os.path.commonpath([os.fspath(path), os.fspath(root)]) == os.fspath(root)
    except ValueError:  # different drives on Windows
        return False


class Source(ABC):
    """A readable collection of images split into shards (one Dagster partition each)."""

    kind: ClassVar[str]  # "folder" | "parquet" | "webdataset"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    @abstractmethod
    def shards(self) -> list[str]:
        """Sorted, stable partition keys: one per shard."""

    @abstractmethod
    def read(self, shard: str) -> Iterator[SourceItem]:
        """Stream the shard's items; never holds the whole shard in memory.

        Raises `ConfigError` when `shard` is not one of `shards()`; a bad item is yielded with
        `error` set, never raised.
        """

    @abstractmethod
    def load_bytes(self, uri: str) -> bytes:
        """Re-read one image by the uri that `read` gave it; raises `SourceReadError`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


class FileShardSource(Source):
    """A source whose shards are files (Parquet files, tar files): one file, one shard.

    `root` is either one such file (its shard key is its file name) or a folder searched
    recursively (keys are paths relative to it). Hidden entries and symlinks that leave the
    folder are ignored.
    """

    suffix: ClassVar[str]

    @property
    def _base(self) -> Path:
        return self.root if self.root.is_dir() else self.root.parent

    def _files(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):  # does not follow dir symlinks
            dirnames[:] = [d for d in dirnames if not is_hidden(d)]
            for name in filenames:
                path = Path(dirpath, name)
                if (not is_hidden(name) and name.lower().endswith(self.suffix)
                        and is_within(os.path.realpath(path), self.root)):
                    found.append(path)
        return found

    def shards(self) -> list[str]:
        return sorted(shard_key(p.relative_to(self._base).as_posix()) for p in self._files())

    def _owns(self, path: Path) -> bool:
        """True when `path` is one of this source's shard files (symlinks resolved)."""
        if self.root.is_file():
            return os.path.realpath(path) == os.fspath(self.root)
        return (is_within(path, self._base) and is_within(os.path.realpath(path), self._base)
                and path.name.lower().endswith(self.suffix) and path.is_file())

    def _shard_file(self, shard: str) -> Path:
        """The file behind a shard key; `ConfigError` when the key is not one of ours."""
        rel = shard_relpath(shard)
        path = Path(os.path.normpath(self._base / rel))
        if rel.startswith("/") or not self._owns(path):
            raise ConfigError(f"Shard {shard!r} is not a {self.suffix} file of the {self.kind} source {self.root}.")
        return path

    def _uri_file(self, file_part: str) -> Path:
        """The shard file named in a uri; `SourceReadError` when it does not belong to this source."""
        path = Path(os.path.normpath(file_part))
        if not path.is_absolute() or not self._owns(path):
            raise SourceReadError(f"Uri file {file_part!r} is not part of the {self.kind} source {self.root}.")
        return path
