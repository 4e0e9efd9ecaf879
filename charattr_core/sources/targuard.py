"""Reading tar headers safely on any Python: `guarded_members(f)` walks a tar with `tarfile`, but
checks every header itself first, so a crafted shard cannot hang or flood the run.

Python's `tarfile` (3.11 and older patch releases, which users run) follows a negative size field
back to an earlier header and loops forever (CVE-2025-8194), and parses a large pax extended
header in quadratic time (CVE-2024-6232). The guard, before `tarfile` sees a header:
- refuses a negative size (base-256 sizes starting with 0xff) and a size past the end of the file;
- refuses extended headers (pax `x`/`g`, GNU long names `L`/`K`) over `MAX_EXTENDED_HEADER`
  bytes, checking every header of a chain of them;
and after it: the next header must lie after the current one (offsets never go back), and a
shard holds at most `MAX_MEMBERS` members. A refusal raises `tarfile.ReadError` with a reason,
which the reader turns into a failed item.
"""

from __future__ import annotations

import os
import tarfile
from typing import BinaryIO, Iterator

BLOCK = 512
MAX_EXTENDED_HEADER = 64 * 1024  # real pax headers hold a long path or a few attributes: < 8 KiB
MAX_MEMBERS = 1_000_000  # per shard; WebDataset shards hold thousands
_EXTENDED_TYPES = (b"x", b"g", b"L", b"K", b"X")
_CHAIN_LIMIT = 8  # extended headers in a row before a member's own header

# Magic bytes of compressed files that users name `.tar` by mistake.
_COMPRESSED = ((b"\x1f\x8b", "gzip", ".tar.gz"), (b"BZh", "bzip2", ".tar.bz2"), (b"\xfd7zXZ\x00", "xz", ".tar.xz"),
               (b"\x28\xb5\x2f\xfd", "zstd", ".tar.zst"))


def compressed_kind(head: bytes) -> str | None:
    """'gzip (decompress it first: a .tar.gz is not read)' style reason when `head` is compressed."""
    for magic, kind, suffix in _COMPRESSED:
        if head.startswith(magic):
            return (f"the file is {kind}-compressed, not a plain tar (decompress it, e.g. `{kind} -d`; "
                    f"only uncompressed .tar shards are read, not {suffix})")
    return None


def _size_field(header: bytes) -> int:
    """The size field of one header block; negative when a base-256 field says so."""
    field = header[124:136]
    if field[0] & 0x80:  # GNU base-256: 0x80 positive, 0xff negative
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * 11)) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text or b"0", 8)
    except ValueError:
        return 0  # tarfile itself reports a garbled header


def check_header_chain(f: BinaryIO, offset: int, file_size: int) -> None:
    """Check the header at `offset` and any extended headers chained from it (see module doc)."""
    for _ in range(_CHAIN_LIMIT):
        f.seek(offset)
        header = f.read(BLOCK)
        if len(header) < BLOCK or not header.strip(b"\0"):
            return  # the end, or a cut-off header: tarfile reports what it finds
        size = _size_field(header)
        if size < 0:
            raise tarfile.ReadError(f"crafted tar header at byte {offset:,}: negative member size {size:,}")
        kind = header[156:157]
        if kind not in _EXTENDED_TYPES:
            return
        if size > MAX_EXTENDED_HEADER:
            raise tarfile.ReadError(f"tar extended header at byte {offset:,} is {size:,} bytes, over the limit "
                                    f"of {MAX_EXTENDED_HEADER:,} bytes")
        if offset + BLOCK + size > file_size:
            return  # cut off by truncation: tarfile reports it
        offset += BLOCK + -(-size // BLOCK) * BLOCK
    raise tarfile.ReadError(f"more than {_CHAIN_LIMIT} tar extended headers in a row before byte {offset:,}")


def open_guarded(f: BinaryIO) -> tarfile.TarFile:
    """`tarfile.open` on an open file, after checking its first header (read by `open`)."""
    head = f.read(BLOCK)
    reason = compressed_kind(head)
    if reason:
        raise tarfile.ReadError(reason)
    check_header_chain(f, 0, os.fstat(f.fileno()).st_size)
    f.seek(0)
    return tarfile.open(fileobj=f, mode="r:")


def guarded_members(f: BinaryIO, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of `tar` (opened by `open_guarded` on `f`), each header checked first."""
    file_size = os.fstat(f.fileno()).st_size
    start, count = 0, 0
    while True:
        if count:  # the first header was checked by `open_guarded`
            check_header_chain(f, tar.offset, file_size)
            f.seek(tar.offset)  # tarfile reads from where the file is; the check moved it
        member = tar.next()
        if member is None:
            return
        tar.members.clear()  # tarfile keeps every header it saw; one pass needs none
        if member.size < 0 or tar.offset <= start:
            raise tarfile.ReadError(f"crafted tar header at byte {member.offset:,}: it points back to byte "
                                    f"{tar.offset:,} (size {member.size:,})")
        start = tar.offset
        count += 1
        if count > MAX_MEMBERS:
            raise tarfile.ReadError(f"more than {MAX_MEMBERS:,} members in one shard")
        yield member
