"""The WebDataset reader: `.tar` shards whose members are grouped into samples by key.

A member `dir/abc.seg.jpg` has key `dir/abc` and extension `seg.jpg` (WebDataset's rule: the
key ends at the first dot of the file name). Members of one sample are adjacent in the tar, as
WebDataset writes them; that is what lets a shard stream in one pass, in bounded memory.
Each image member is one item; all images of a sample share its tags, taken from the first of
`abc.tags`, `abc.txt` or `abc.json` (fields `tags`, `tag_string`, `caption`, `text`). Uris are
`<tar>#<member name>`. Member names are only keys: nothing is ever extracted to disk, so a name
like `../../etc/x.jpg` is harmless. Links and other non-file members named like images become
items with errors; hidden members (`._abc.jpg` from macOS tar) are skipped. A truncated or
corrupt tar yields everything before the damage and then one item saying where it broke.
"""

from __future__ import annotations

import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from ..records import SourceItem, raw_uri
from .base import MAX_IMAGE_BYTES, FileShardSource, SourceReadError, is_hidden, is_image_name, one_line, open_regular_file, too_big
from .targuard import guarded_members, open_guarded
from .tagtext import MAX_TAGS_BYTES, TagTextError, check_size, decode_tag_text, tags_from_json

TAG_EXTENSIONS = ("tags", "txt", "json")  # in order of preference
_INDEXES_KEPT = 4  # tar member indexes kept for `load_bytes`


@dataclass
class _Sample:
    """The members of one key seen so far: images (name, bytes or error) and raw tag files."""

    key: str | None
    images: list[tuple[str, bytes | None, str | None]] = field(default_factory=list)
    tag_files: dict[str, tuple[str, bytes | None, str | None]] = field(default_factory=dict)

    def tags(self, max_bytes: int) -> tuple[str | None, str | None]:
        """(tags, None), or (None, why the preferred tags file is unusable)."""
        for ext in TAG_EXTENSIONS:
            if ext in self.tag_files:
                name, raw, error = self.tag_files[ext]
                try:
                    if error or raw is None:
                        raise TagTextError(error or f"{name} cannot be read")
                    text = tags_from_json(raw, name, max_bytes) if ext == "json" else decode_tag_text(raw, name, max_bytes)
                    return text, None
                except TagTextError as exc:
                    return None, f"unreadable tags file: {exc}"
        return None, None

    def items(self, tar_path: Path, shard: str, max_bytes: int) -> Iterator[SourceItem]:
        if not self.images:
            return
        tags, tags_error = self.tags(max_bytes)
        for name, data, error in self.images:
            reasons = [r for r in (error, tags_error) if r]
            yield SourceItem(uri=f"{tar_path}#{name}", shard=shard, data=data, tags=tags,
                             error="; ".join(reasons) or None)


class WebDatasetSource(FileShardSource):
    """Images and tags in WebDataset `.tar` shards."""

    kind = "webdataset"
    suffix = ".tar"

    def __init__(self, root: str | Path, *, max_tags_bytes: int = MAX_TAGS_BYTES) -> None:
        super().__init__(root)
        self.max_tags_bytes = max_tags_bytes
        self._lock = threading.Lock()
        self._indexes: OrderedDict[Path, dict[str, tuple[int, int]]] = OrderedDict()

    def read(self, shard: str) -> Iterator[SourceItem]:
        path = self._shard_file(shard)
        sample, reading, last = _Sample(key=None), None, ""
        names = _MemberKeys()
        try:
            # Seekable mode ("r:") still reads the file front to back in one pass, but reads each
            # member's data straight from the file: 40 % faster than stream mode ("r|"), whose
            # record buffer copies every byte once more. `targuard` checks each header first.
            with open_regular_file(path) as f, open_guarded(f) as tar:
                for member in guarded_members(f, tar):
                    item_key = names.key(member.name)
                    last = item_key
                    key, ext = _split_name(member.name)
                    if key is None or member.isdir():
                        continue
                    if key != sample.key:
                        yield from sample.items(path, shard, self.max_tags_bytes)
                        sample = _Sample(key=key)
                    reading = item_key
                    self._add(sample, tar, member, ext, item_key)
                    reading = None
                _check_end(f, tar.offset)
        except SourceReadError as exc:  # not a regular file, a broken symlink, ...
            yield SourceItem(uri=f"{path}#", shard=shard, data=None, error=f"unreadable tar file: {exc}")
            return
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield from sample.items(path, shard, self.max_tags_bytes)
            # The uri names the member being read when it broke, else the tar itself ("<tar>#"),
            # so it never repeats the uri of an item already yielded.
            where = f"in member {reading!r}" if reading else f"after member {last!r}" if last else "at its start"
            reason = str(exc) if "compressed" in str(exc) else f"truncated or corrupt {where} ({exc})"
            yield SourceItem(uri=f"{path}#{reading or ''}", shard=shard, data=None,
                             error=f"unreadable tar file: {one_line(reason)}")
            return
        yield from sample.items(path, shard, self.max_tags_bytes)

    def _add(self, sample: _Sample, tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str, item_key: str) -> None:
        """Read one member into its sample, now: the shard is read in one pass, in file order.
        `item_key` is the member's name, made unique within the tar (see `_MemberKeys`)."""
        name = member.name
        tag_ext = ext.rpartition(".")[2]
        if is_image_name(name):
            if not member.isfile():
                sample.images.append((item_key, None, "unreadable file: tar member is a link or special file, not a file"))
            elif member.size > MAX_IMAGE_BYTES:
                sample.images.append((item_key, None, f"unreadable file: {too_big(member.size)}"))
            else:
                sample.images.append((item_key, _read_member(tar, member), None))
        elif tag_ext in TAG_EXTENSIONS and tag_ext not in sample.tag_files:
            try:
                if not member.isfile():
                    raise TagTextError(f"{name} is a link or special file, not a file")
                check_size(name, member.size, self.max_tags_bytes)
                sample.tag_files[tag_ext] = (name, _read_member(tar, member), None)
            except TagTextError as exc:
                sample.tag_files[tag_ext] = (name, None, str(exc))

    def load_bytes(self, uri: str) -> bytes:
        uri = raw_uri(uri)
        cut = uri.lower().find(self.suffix + "#")
        if cut < 0:
            raise SourceReadError(f"Uri {uri!r} is not a tar member uri like <file>.tar#<member>.")
        path = self._uri_file(uri[: cut + len(self.suffix)])
        member = uri[cut + len(self.suffix) + 1:]
        try:
            location = self._index(path).get(member)
            if location is not None:
                offset, size = location
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(size)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SourceReadError(f"Cannot read {uri}: {exc}.") from None
        if location is None:
            raise SourceReadError(f"Cannot read {uri}: {path.name} has no file member {member!r}.")
        if len(data) != size:
            raise SourceReadError(f"Cannot read {uri}: the tar file is truncated.")
        return data

    def _index(self, path: Path) -> dict[str, tuple[int, int]]:
        """Item key (`_MemberKeys`) -> (data offset, size) for the regular files of one tar; the
        last few are kept. Building it reads only the headers (tarfile seeks over the data)."""
        with self._lock:
            if path in self._indexes:
                self._indexes.move_to_end(path)
                return self._indexes[path]
            index: dict[str, tuple[int, int]] = {}
            names = _MemberKeys()
            try:
                with open_regular_file(path) as f, open_guarded(f) as tar:
                    for member in guarded_members(f, tar):
                        key = names.key(member.name)
                        if member.isfile():
                            index[key] = (member.offset_data, member.size)
            except (tarfile.TarError, EOFError, SourceReadError):
                pass  # a damaged tail: the members before it can still be read
            self._indexes[path] = index
            if len(self._indexes) > _INDEXES_KEPT:
                self._indexes.popitem(last=False)
            return index


class _MemberKeys:
    """Unique keys for the members of one tar, in file order. A tar may hold two members of the
    same name (`tar -r` appends): the first keeps its name, a later one gets `<name>#<n>` (the
    smallest n >= 2 not taken), so each item has its own uri and its own bytes; reading and
    `load_bytes` number them the same way, since both walk the members in file order."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def key(self, name: str) -> str:
        key, n = name, 2
        while key in self._taken:
            key, n = f"{name}#{n}", n + 1
        self._taken.add(key)
        return key


def _check_end(f: BinaryIO, offset: int) -> None:
    """`tarfile` ends quietly at a header it cannot parse (a cut-off or garbled one); only zero
    blocks (the end-of-archive marker) or nothing may follow the last member."""
    f.seek(offset)
    if f.read(1024).strip(b"\0"):
        raise tarfile.ReadError("a header after it cannot be read")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    stream = tar.extractfile(member)
    assert stream is not None  # only called for regular files
    return stream.read()


def _split_name(name: str) -> tuple[str | None, str]:
    """(key, extension) of a member name; (None, "") for hidden members and names without a dot."""
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not base or is_hidden(base) or not dot:
        return None, ""
    return (f"{directory}/{stem}" if directory else stem), ext.lower()
