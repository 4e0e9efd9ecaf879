"""The folder reader: a tree of image files with optional sidecar tag files.

Layout and rules:
- Shards: each immediate sub-folder of the root (with everything below it) is one shard, keyed
  by its name; the image files that sit loose in the root form the shard ".root" (`ROOT_SHARD`).
  Sub-folders without any image file are not shards.
- Images: `IMAGE_EXTENSIONS`, case-insensitive (`a.JPG` is read). A folder named like an image
  (`x.png/`) is a folder and is walked, never read as an image. Order is by name, depth first.
- Sidecars: `a.png.txt` (the image's full name + ".txt", as gallery-dl writes it) belongs to
  `a.png` alone; otherwise `a.txt` (kohya / sd-scripts style) is used. When `a.txt` would serve
  several images (`a.png` and `a.jpg`, neither with its own `.png.txt` / `.jpg.txt`), every one
  of them still gets an item, with the error "ambiguous tags file: ..." and no tags: the images
  are kept and visible, and tags are never guessed (the user renames the sidecar and re-runs).
  No sidecar means tags None (unknown); an empty sidecar means tags "" (known: no tags).
- Safety: hidden entries (names starting with ".") are skipped. Folder symlinks are never
  followed (one inside the root would read images twice, one outside is out of bounds, and
  loops cannot happen). A file symlink is read only when its target lies inside the root;
  otherwise, and for broken or looping links, the item carries the reason. Only regular files
  are opened (a FIFO named `x.png` cannot hang the reader).
"""

from __future__ import annotations

import logging
import os
import stat
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError
from ..records import SourceItem, raw_uri
from .base import MAX_IMAGE_BYTES, ROOT_SHARD, too_big
from .base import Source, SourceReadError, is_hidden, is_image_name, is_within, shard_key, shard_relpath
from .base import os_reason as _os_reason
from .tagtext import MAX_TAGS_BYTES, TagTextError, check_size, decode_tag_text

log = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".txt"


class FolderSource(Source):
    """Images in a folder tree, tags in sidecar `.txt` files."""

    kind = "folder"

    def __init__(self, root: str | Path, *, max_tags_bytes: int = MAX_TAGS_BYTES) -> None:
        super().__init__(root)
        self.max_tags_bytes = max_tags_bytes

    # -- shards ---------------------------------------------------------------------------------

    def shards(self) -> list[str]:
        try:
            files, dirs = _listing(self.root)
        except OSError as exc:
            raise ConfigError(f"Cannot read the source folder {self.root}: {_os_reason(exc, self.root)}.") from None
        keys = [ROOT_SHARD] if any(is_image_name(f) for f in files) else []
        keys += [shard_key(d) for d in dirs if _contains_image(self.root / d)]
        return sorted(keys)

    def _shard_dir(self, shard: str) -> Path:
        if shard == ROOT_SHARD:
            return self.root
        name = shard_relpath(shard)
        path = self.root / name
        if "/" in name or name in ("", "..") or is_hidden(name) or path.is_symlink() or not path.is_dir():
            raise ConfigError(f"Shard {shard!r} is not a sub-folder of the folder source {self.root}.")
        return path

    # -- reading --------------------------------------------------------------------------------

    def read(self, shard: str) -> Iterator[SourceItem]:
        top = self._shard_dir(shard)
        stack = [top]
        while stack:  # depth first, by name; an explicit stack so deep trees cannot overflow
            directory = stack.pop()
            try:
                files, dirs, links = _listing_with_links(directory)
            except OSError as exc:
                yield SourceItem(uri=str(directory), shard=shard, data=None,
                                 error=f"unreadable folder: {_os_reason(exc, directory)}")
                continue
            # One realpath per folder instead of one per file (an lstat per path component each):
            # in a folder that is its own real path inside the root, a file that is not a symlink
            # is inside the root too, and O_NOFOLLOW refuses one swapped in since the listing.
            real = os.path.realpath(directory)
            trusted = real == str(directory) and is_within(real, self.root)
            plain = frozenset(f for f in files if f not in links) if trusted else frozenset()
            yield from self._read_files(directory, files, shard, plain)
            if shard != ROOT_SHARD:
                stack.extend(directory / d for d in reversed(dirs))

    def _read_files(self, directory: Path, files: list[str], shard: str, plain: frozenset[str] = frozenset()
                    ) -> Iterator[SourceItem]:
        """Items of one folder's files; `plain` names files known to be no symlinks in a resolved folder."""
        images = [f for f in files if is_image_name(f)]
        sidecars = {f[: -len(SIDECAR_SUFFIX)]: f for f in files if f.lower().endswith(SIDECAR_SUFFIX)}
        stem_users: dict[str, list[str]] = defaultdict(list)  # "a" -> images that would use a.txt
        for image in images:
            stem = os.path.splitext(image)[0]
            if image not in sidecars and stem in sidecars:
                stem_users[stem].append(image)

        for image in images:
            path = directory / image
            data, error = self._read_image(path, image in plain)
            tags, tags_error = None, None
            stem = os.path.splitext(image)[0]
            if image in sidecars:
                tags, tags_error = self._read_sidecar(directory / sidecars[image], sidecars[image] in plain)
            elif len(stem_users.get(stem, ())) > 1:
                users = " and ".join(stem_users[stem])
                tags_error = (f"ambiguous tags file: {sidecars[stem]} matches {users}; rename it to "
                              f"<image name>{SIDECAR_SUFFIX} (e.g. {image}{SIDECAR_SUFFIX}) to say which image it tags")
            elif stem in sidecars:
                tags, tags_error = self._read_sidecar(directory / sidecars[stem], sidecars[stem] in plain)
            reasons = [r for r in (error, tags_error) if r]
            yield SourceItem(uri=str(path), shard=shard, data=data, tags=tags, error="; ".join(reasons) or None)

    def _read_image(self, path: Path, resolved: bool = False) -> tuple[bytes | None, str | None]:
        try:
            return self._read_file(path, resolved=resolved), None
        except SourceReadError as exc:
            return None, f"unreadable file: {exc}"

    def _read_sidecar(self, path: Path, resolved: bool = False) -> tuple[str | None, str | None]:
        try:
            raw = self._read_file(path, max_bytes=self.max_tags_bytes, resolved=resolved)
            return decode_tag_text(raw, path.name, self.max_tags_bytes), None
        except (SourceReadError, TagTextError) as exc:
            return None, f"unreadable tags file: {exc}"

    def _read_file(self, path: Path, max_bytes: int | None = None, *, resolved: bool = False) -> bytes:
        """The bytes of a regular file inside the root; `SourceReadError` (a short reason) if not.

        With `max_bytes`, a larger file raises `TagTextError` without being read. `resolved` says
        the caller already knows `path` is a real path inside the root (see `read`).
        """
        real = str(path) if resolved else os.path.realpath(path)
        if not resolved and not is_within(real, self.root):
            raise SourceReadError(f"symlink points outside the source folder (to {real})")
        try:
            # `real` has no symlinks left; O_NOFOLLOW refuses one swapped in since the check.
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise SourceReadError(_os_reason(exc, path)) from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SourceReadError("not a regular file")
            if max_bytes is not None:
                check_size(path.name, info.st_size, max_bytes)
            elif info.st_size > MAX_IMAGE_BYTES:
                raise SourceReadError(too_big(info.st_size))
            try:
                return f.read() if max_bytes is None else f.read(max_bytes + 1)
            except OSError as exc:
                raise SourceReadError(_os_reason(exc, path)) from None

    def load_bytes(self, uri: str) -> bytes:
        uri = raw_uri(uri)
        path = Path(os.path.normpath(uri))
        if not path.is_absolute() or not is_within(path, self.root) or str(path) != uri:
            raise SourceReadError(f"Uri {uri!r} is not a file of the folder source {self.root}.")
        try:
            return self._read_file(path)
        except SourceReadError as exc:
            raise SourceReadError(f"Cannot read {uri}: {exc}.") from None


def _listing(directory: Path) -> tuple[list[str], list[str]]:
    """(file names, real sub-folder names) of one folder, sorted, hidden entries left out.

    Symlinks to folders are left out (see the module docstring); any other symlink counts as a
    file so that reading it reports what is wrong with it.
    """
    files, dirs, _links = _listing_with_links(directory)
    return files, dirs


def _listing_with_links(directory: Path) -> tuple[list[str], list[str], frozenset[str]]:
    """`_listing`, plus which of the file names are symlinks (scandir knows it for free)."""
    files, dirs, links = [], [], []
    with os.scandir(directory) as entries:
        for entry in entries:
            if is_hidden(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                dirs.append(entry.name)
            elif entry.is_symlink():
                if _points_to_folder(entry):
                    log.debug("not following folder symlink %s", entry.path)
                else:
                    files.append(entry.name)
                    links.append(entry.name)
            else:
                files.append(entry.name)
    return sorted(files), sorted(dirs), frozenset(links)


def _points_to_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: reading it reports the loop
        return False


def _contains_image(directory: Path) -> bool:
    """Whether any image file lies in or below `directory`; stops at the first one.

    An unreadable folder counts as containing images, so that reading the shard reports it.
    """
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            files, dirs = _listing(current)
        except OSError:
            return True
        if any(is_image_name(f) for f in files):
            return True
        stack.extend(current / d for d in dirs)
    return False
