"""What every reader is: the `Source` contract, partition keys, and the bits the readers share.

A source is split into shards; each shard is one Dagster partition. Shard keys are relative
POSIX paths made safe for Dagster (see `shard_key`). `read(shard)` streams `SourceItem`s, and
`load_bytes(uri)` re-reads one image later: images are referenced by uri, never copied.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO, ClassVar, Iterator
from urllib.parse import unquote

from ..errors import ConfigError
from ..records import SourceItem

# File name suffixes read as images (case-insensitive). The content decides the real format.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})

# Image files larger than this are refused unread (a 4 GB file named `.png` must not exhaust
# memory); the largest real images (100 Mpx PNGs) stay well below it.
MAX_IMAGE_BYTES = 512 << 20

# The folder reader's shard for the image files that sit loose in the root. Hidden names are
# never sub-folder shards, so this key cannot collide with one; unlike ".", it is also a usable
# file name for IO managers that store one file per partition.
ROOT_SHARD = ".root"

# Characters that Dagster rejects or that break its partition-range syntax ("a...b", "[a, b]",
# multi-partition "x|y"); they are percent-encoded in shard keys, as is "%" itself.
_KEY_UNSAFE = re.compile(r"[%,\[\]|\x00-\x1f\x7f]")
_DOT_RUN = re.compile(r"\.{3,}")
_SURROGATE = re.compile("[\udc80-\udcff]")  # a non-UTF-8 byte of a file name, as os.fsdecode gives it


class SourceReadError(OSError):
    """One item cannot be (re-)read; the message is one sentence saying why."""


def too_big(size: int, limit: int = MAX_IMAGE_BYTES) -> str:
    return f"the file is {size:,} bytes, over the limit of {limit:,} bytes for an image"


def one_line(text: str) -> str:
    """`text` with line breaks folded into " / ": a failure reason is one line in every output."""
    return " / ".join(part.strip() for part in str(text).splitlines() if part.strip())


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    """Hidden entries (".git", ".DS_Store", macOS "._x.jpg" resource forks) are never read."""
    return name.startswith(".")


def shard_key(relpath: str) -> str:
    """A Dagster-safe partition key for a relative POSIX path; `shard_relpath` inverts it.

    The one mapping from shard paths to partition keys: every partition registration (CLI,
    sensor, schedule) must use it. Bytes of a non-UTF-8 name (surrogate escapes, as Python
    gives them for `caf\xe9`) are percent-encoded too, so a key is always valid text.
    """
    key = _KEY_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", relpath)
    key = _SURROGATE.sub(lambda m: f"%{ord(m.group()) - 0xDC00:02X}", key)
    return _DOT_RUN.sub(lambda m: "%2E" * len(m.group()), key)


def shard_relpath(key: str) -> str:
    """The relative POSIX path that `shard_key` encoded (non-UTF-8 bytes as surrogate escapes)."""
    return unquote(key, errors="surrogateescape")


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
    recursively (keys are paths relative to it). Hidden entries are ignored. A symlink is followed
    when its target stays inside the root, or inside a Hugging Face cache repo folder for a root
    below its `snapshots/` (whose files are symlinks into `../../blobs`); other symlinks are
    skipped and counted in `skipped_links`. Entries that are not regular files (a FIFO, a broken
    symlink named `x.tar`) are shards whose reading yields one failed item saying why: they never
    block or stop a run.
    """

    suffix: ClassVar[str]

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.skipped_links: list[str] = []  # symlinks found by `shards()` that point out of bounds
        self._bound = _link_bound(self.root)

    @property
    def _base(self) -> Path:
        return self.root if self.root.is_dir() else self.root.parent

    def _wanted(self, path: Path) -> bool:
        """Whether a file found under the root is one of this source's shards (see `ParquetSource`)."""
        return True

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return [self.root]
        found, skipped = [], []
        for dirpath, dirnames, filenames in os.walk(self.root):  # does not follow dir symlinks
            dirnames[:] = [d for d in dirnames if not is_hidden(d)]
            for name in filenames:
                path = Path(dirpath, name)
                if is_hidden(name) or not name.lower().endswith(self.suffix):
                    continue
                if not is_within(os.path.realpath(path), self._bound):
                    skipped.append(str(path))
                elif self._wanted(path):
                    found.append(path)
        self.skipped_links = skipped
        return found

    def shards(self) -> list[str]:
        return sorted(shard_key(p.relative_to(self._base).as_posix()) for p in self._files())

    def _owns(self, path: Path) -> bool:
        """True when `path` is one of this source's shard files (symlinks resolved); it may be
        something other than a regular file, which reading then reports."""
        if not self.root.is_dir():
            return os.path.normpath(path) == os.fspath(self.root)
        return (is_within(path, self._base) and is_within(os.path.realpath(path), self._bound)
                and path.name.lower().endswith(self.suffix) and os.path.lexists(path) and not path.is_dir())

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


def _link_bound(root: Path) -> Path:
    """How far symlinks under `root` may point: `root`, or the cache repo folder holding it when
    `root` lies in a Hugging Face snapshot (`<repo>/snapshots/<revision>/...` with `<repo>/blobs`)."""
    for folder in (root, *root.parents):
        if folder.name == "snapshots" and (folder.parent / "blobs").is_dir():
            return folder.parent
    return root if root.is_dir() else root.parent


def open_regular_file(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file; `SourceReadError` (a short
    reason) if not. Never blocks: a FIFO is opened non-blocking and refused."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise SourceReadError(os_reason(exc, Path(path))) from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise SourceReadError("not a regular file")
    return f


def os_reason(exc: OSError, path: Path) -> str:
    """A short, lower-case reason for an OS error on `path`."""
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "broken symlink (its target does not exist)" if os.path.islink(path) else "it no longer exists"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EISDIR:
        return "is a folder, not a file"
    return (exc.strerror or str(exc)).lower()
