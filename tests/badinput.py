"""A corpus of bad and odd inputs, each paired with the outcome charattr must give.

    corpus = write_folder_corpus(tmp_path)       # images + sidecars in one shard of a folder source
    table = write_parquet_corpus(tmp_path)       # Parquet files with null / wrong-typed cells
    tars = write_tar_corpus(tmp_path)            # WebDataset shards, including a truncated one

Every `Case` names the item by its uri suffix and expects a status: "ok", "failed" (the error
must contain every word in `reason`, case-insensitively) or "absent" (no item at all: hidden
files, folder symlinks, a folder named like an image). Other test modules reuse this corpus.
Everything is generated (small, deterministic); nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads any file: no permission cases
ANY_TAGS = object()  # `Case.tags` default: the tags are not checked
SHARD = "corpus"


@dataclass(frozen=True)
class Case:
    """One input and what must come out of it."""

    name: str
    path: str  # the item's uri relative to the source root ("corpus/x.png", "t.parquet#row=3", "a.tar#k.jpg")
    status: str  # "ok" | "failed" | "absent"
    reason: tuple[str, ...] = ()  # words the error must contain when failed
    width: int | None = None  # checked when given
    height: int | None = None
    format: str | None = None
    tags: object = ANY_TAGS  # expected raw tags (None = no tags file) unless ANY_TAGS
    needs_non_root: bool = False  # permission cases: root can read anything

    def __post_init__(self) -> None:
        assert self.status in ("ok", "failed", "absent"), self.status
        assert (self.status == "failed") == bool(self.reason), f"{self.name}: a failed case needs a reason"


@dataclass(frozen=True)
class Corpus:
    root: Path  # the source root to open
    cases: list[Case]

    def uri(self, case: Case) -> str:
        return f"{self.root}/{case.path}"

    @property
    def expected(self) -> list[Case]:
        """Cases that must produce an item (not "absent")."""
        return [c for c in self.cases if c.status != "absent"]


def check(record, case: Case) -> list[str]:
    """What is wrong with `record` (an `ImageRecord`, or None when no item came out) for `case`."""
    if record is None:
        return [] if case.status == "absent" else [f"{case.name}: no record, expected {case.status}"]
    problems = []
    if case.status != record.status:
        problems.append(f"{case.name}: status {record.status!r} (error {record.error!r}), expected {case.status!r}")
    missing = [w for w in case.reason if w.lower() not in (record.error or "").lower()]
    if missing:
        problems.append(f"{case.name}: error {record.error!r} lacks {missing}")
    for name in ("width", "height", "format"):
        if getattr(case, name) is not None and getattr(record, name) != getattr(case, name):
            problems.append(f"{case.name}: {name} {getattr(record, name)!r}, expected {getattr(case, name)!r}")
    if case.tags is not ANY_TAGS and record.raw_tags != case.tags:
        problems.append(f"{case.name}: raw_tags {record.raw_tags!r}, expected {case.tags!r}")
    return problems


def cases_of(write: Callable[[Path], Corpus]) -> list[Case]:
    """A corpus' cases without keeping its files (for pytest parametrisation at collection time)."""
    with tempfile.TemporaryDirectory() as tmp:
        return write(Path(tmp)).cases


# -- image bytes ------------------------------------------------------------------------------


def picture(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A deterministic noisy RGB picture (noise makes truncation land inside image data)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def png_bytes(seed: int = 0) -> bytes:
    return encode(picture(seed=seed), "PNG")


def jpeg_bytes(seed: int = 0) -> bytes:
    return encode(picture(seed=seed), "JPEG", quality=90)


def truncated(data: bytes, fraction: float = 0.6) -> bytes:
    return data[: int(len(data) * fraction)]


def bilevel_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit grey PNG written by hand, so huge sizes cost nothing to make: all-black rows,
    `rows` of them (default: all, a valid image; fewer: valid header, short data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """Stored 40x20 with EXIF orientation 6 (rotate 90 degrees): displayed 20x40."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(picture(40, 20), "JPEG", exif=exif)


def broken_exif_jpeg() -> bytes:
    """A valid JPEG with an APP1 Exif segment whose TIFF structure points nowhere."""
    jpeg = jpeg_bytes(3)
    payload = b"Exif\x00\x00" + b"II*\x00" + b"\xff\xff\xff\x7f"
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def corrupt_png() -> bytes:
    """Right size and structure, but bytes inside IDAT overwritten (CRC no longer matches)."""
    data = bytearray(png_bytes(4))
    start = data.index(b"IDAT") + 20
    data[start:start + 40] = b"\xff" * 40
    return bytes(data)


def animated_gif() -> bytes:
    frames = [picture(32, 24, seed=s).convert("P") for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buf.getvalue()


# -- the folder corpus ------------------------------------------------------------------------

_Writer = Callable[[Path, Path], list[Case]]  # (shard folder, a folder outside the source) -> cases
_WRITERS: list[_Writer] = []


def _writer(fn: _Writer) -> _Writer:
    _WRITERS.append(fn)
    return fn


def _ok(name: str, file: str, **expect) -> Case:
    return Case(name, f"{SHARD}/{file}", "ok", **expect)


def _failed(name: str, file: str, *reason: str, **expect) -> Case:
    return Case(name, f"{SHARD}/{file}", "failed", tuple(reason), **expect)


@_writer
def _valid_images(d: Path, _out: Path) -> list[Case]:
    picture().save(d / "valid.png")
    (d / "valid.txt").write_text("1girl solo long_hair\n", encoding="utf-8")
    picture().save(d / "plain.jpg", quality=90)
    picture().save(d / "plain_webp.webp")
    picture().save(d / "plain_bmp.bmp")
    picture().convert("P").save(d / "plain_gif.gif")
    (d / "upper.JPG").write_bytes(jpeg_bytes(1))
    (d / "png_named.jpg").write_bytes(png_bytes(2))  # the content decides the format
    return [
        _ok("png with stem sidecar", "valid.png", width=64, height=48, format="PNG", tags="1girl solo long_hair"),
        _ok("jpeg without sidecar", "plain.jpg", format="JPEG", tags=None),
        _ok("webp", "plain_webp.webp", format="WEBP"),
        _ok("bmp", "plain_bmp.bmp", format="BMP"),
        _ok("static gif", "plain_gif.gif", format="GIF"),
        _ok("uppercase extension .JPG", "upper.JPG", format="JPEG"),
        _ok("png bytes named .jpg", "png_named.jpg", format="PNG"),
    ]


@_writer
def _truncated(d: Path, _out: Path) -> list[Case]:
    (d / "trunc.jpg").write_bytes(truncated(jpeg_bytes(5)))
    (d / "trunc_end.jpg").write_bytes(jpeg_bytes(5)[:-2])  # only the end-of-image marker missing
    (d / "trunc_progressive.jpg").write_bytes(truncated(encode(picture(seed=6), "JPEG", progressive=True)))
    (d / "trunc.png").write_bytes(truncated(png_bytes(7)))
    (d / "trunc_header.png").write_bytes(png_bytes(7)[:20])  # cut inside IHDR
    (d / "trunc.webp").write_bytes(truncated(encode(picture(seed=8), "WEBP")))
    (d / "trunc.gif").write_bytes(truncated(encode(picture(seed=9).convert("P"), "GIF")))
    (d / "corrupt.png").write_bytes(corrupt_png())
    return [
        _failed("truncated jpeg", "trunc.jpg", "truncated image file"),
        _failed("jpeg missing its last bytes", "trunc_end.jpg", "truncated image file"),
        _failed("truncated progressive jpeg", "trunc_progressive.jpg", "truncated image file"),
        _failed("truncated png", "trunc.png", "truncated image file"),
        _failed("png cut inside its header", "trunc_header.png", "truncated image file"),
        _failed("truncated webp", "trunc.webp", "truncated image file"),
        _failed("truncated gif", "trunc.gif", "truncated image file"),
        _failed("png with corrupt compressed data", "corrupt.png", "corrupt image data"),
    ]


@_writer
def _not_images(d: Path, _out: Path) -> list[Case]:
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is a text file, renamed to .png\n")
    (d / "error_page.jpg").write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                                      "<body>Not Found</body></html>\n")
    (d / "random.jpg").write_bytes(np.random.default_rng(10).bytes(4096))
    (d / "icon.png").write_bytes(encode(picture(32, 32), "ICO"))  # an image, but not a format we read
    return [
        _failed("zero-byte file", "empty.png", "empty file"),
        _failed("text renamed .png", "text.png", "not an image", "text"),
        _failed("HTML error page saved as .jpg", "error_page.jpg", "not an image (looks like HTML)"),
        _failed("random bytes", "random.jpg", "not an image", "unrecognised"),
        _failed("ICO named .png", "icon.png", "not an image", "unsupported"),
    ]


@_writer
def _sizes_and_modes(d: Path, _out: Path) -> list[Case]:
    (d / "bomb.png").write_bytes(bilevel_png(10_000, 10_000))  # 100 Mpx > the default 89.5 Mpx limit
    (d / "bomb_huge.png").write_bytes(bilevel_png(100_000, 100_000, rows=1))  # over Pillow's own hard limit
    picture(1, 1).save(d / "one_pixel.png")
    Image.new("L", (20_000, 20), 128).save(d / "wide.png")
    Image.new("CMYK", (30, 20), (10, 200, 30, 40)).save(d / "cmyk.jpg")
    Image.fromarray((np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)).save(d / "sixteen_bit.png")
    picture(32, 24).convert("P").save(d / "palette_alpha.png", transparency=0)
    (d / "animated.gif").write_bytes(animated_gif())
    (d / "rotated.jpg").write_bytes(exif_rotated_jpeg())
    (d / "broken_exif.jpg").write_bytes(broken_exif_jpeg())
    return [
        _failed("decompression bomb over the limit", "bomb.png", "decompression bomb", "100,000,000"),
        _failed("decompression bomb over Pillow's hard limit", "bomb_huge.png", "decompression bomb"),
        _ok("1x1", "one_pixel.png", width=1, height=1),
        _ok("20000x20", "wide.png", width=20_000, height=20),
        _ok("CMYK jpeg", "cmyk.jpg", width=30, height=20, format="JPEG"),
        _ok("16-bit png", "sixteen_bit.png", width=30, height=20, format="PNG"),
        _ok("palette png with transparency", "palette_alpha.png", format="PNG"),
        _ok("animated gif (first frame)", "animated.gif", width=32, height=24, format="GIF"),
        _ok("EXIF-rotated jpeg: displayed size", "rotated.jpg", width=20, height=40),
        _ok("broken EXIF", "broken_exif.jpg", width=64, height=48, format="JPEG"),
    ]


@_writer
def _sidecars(d: Path, out: Path) -> list[Case]:
    png = png_bytes(11)
    for name in ("huge", "binary", "latin1", "empty", "bom", "utf16", "blank", "full", "clash", "pair", "far"):
        (d / f"tags_{name}.png").write_bytes(png)
    (d / "tags_huge.txt").write_bytes(b"long_hair " * ((1 << 20) // 10 + 1))  # just over 1 MiB
    (d / "tags_binary.txt").write_bytes(b"1girl\x00\x01\x02solo")
    (d / "tags_latin1.txt").write_bytes("1girl café".encode("latin-1"))
    (d / "tags_empty.txt").write_bytes(b"")
    (d / "tags_bom.txt").write_bytes("\ufeff1girl smile".encode("utf-8"))
    (d / "tags_utf16.txt").write_bytes("1girl blue_eyes".encode("utf-16"))  # with BOM, as Notepad writes it
    (d / "tags_blank.txt").write_text("  \n\n")
    (d / "tags_full.png.txt").write_text("1boy")  # the image's full name wins over the stem
    (d / "tags_full.txt").write_text("1girl")
    (d / "tags_clash.jpg").write_bytes(jpeg_bytes(12))  # tags_clash.png and .jpg both match tags_clash.txt
    (d / "tags_clash.txt").write_text("1girl")
    (d / "tags_pair.jpg").write_bytes(jpeg_bytes(13))  # tags_pair.png has its own file, so tags_pair.txt is the jpg's
    (d / "tags_pair.png.txt").write_text("red_hair")
    (d / "tags_pair.txt").write_text("blue_hair")
    (out / "far.txt").write_text("1girl")
    (d / "tags_far.txt").symlink_to(out / "far.txt")
    return [
        _failed("sidecar over 1 MiB", "tags_huge.png", "unreadable tags file", "limit"),
        _failed("binary sidecar", "tags_binary.png", "unreadable tags file", "NUL"),
        _failed("non-UTF-8 sidecar", "tags_latin1.png", "unreadable tags file", "not UTF-8", "0xe9"),
        _ok("empty sidecar means no tags", "tags_empty.png", tags=""),
        _ok("UTF-8 sidecar with BOM", "tags_bom.png", tags="1girl smile"),
        _ok("UTF-16 sidecar with BOM", "tags_utf16.png", tags="1girl blue_eyes"),
        _ok("whitespace-only sidecar", "tags_blank.png", tags=""),
        _ok("image.png.txt sidecar wins", "tags_full.png", tags="1boy"),
        _failed("sidecar collision: png", "tags_clash.png", "ambiguous tags file", "tags_clash.jpg and tags_clash.png", tags=None),
        _failed("sidecar collision: jpg", "tags_clash.jpg", "ambiguous tags file", "tags_clash.jpg and tags_clash.png", tags=None),
        _ok("collision resolved by a full-name sidecar: png", "tags_pair.png", tags="red_hair"),
        _ok("collision resolved by a full-name sidecar: jpg", "tags_pair.jpg", tags="blue_hair"),
        _failed("sidecar symlink outside the root", "tags_far.png", "unreadable tags file", "outside"),
    ]


@_writer
def _filesystem(d: Path, out: Path) -> list[Case]:
    (d / "locked.png").write_bytes(png_bytes(14))
    (d / "locked.png").chmod(0)
    (d / "locked_tags.png").write_bytes(png_bytes(15))
    (d / "locked_tags.txt").write_text("1girl")
    (d / "locked_tags.txt").chmod(0)
    (d / "loop_a.png").symlink_to(d / "loop_b.png")
    (d / "loop_b.png").symlink_to(d / "loop_a.png")
    (d / "dir_loop").symlink_to(d, target_is_directory=True)  # a folder loop: never followed
    (out / "secret.png").write_bytes(png_bytes(16))
    (d / "escape.png").symlink_to(out / "secret.png")
    (d / "escape_dir").symlink_to(out, target_is_directory=True)
    (d / "dangling.png").symlink_to(d / "missing.png")
    (d / "alias.png").symlink_to(d / "valid.png")  # inside the root: read
    (d / "folder.png").mkdir()  # a folder named like an image is walked, not read
    (d / "folder.png" / "inner.png").write_bytes(png_bytes(17))
    (d / "nested" / "deeper").mkdir(parents=True)
    (d / "nested" / "deeper" / "deep.png").write_bytes(png_bytes(18))
    (d / "nested" / "deeper" / "deep.txt").write_text("1girl")
    (d / ".hidden.png").write_bytes(png_bytes(19))
    (d / ".cache").mkdir()
    (d / ".cache" / "thumb.png").write_bytes(png_bytes(20))
    (d / "._resource_fork.jpg").write_bytes(b"\x00\x05\x16\x07 macOS AppleDouble, not an image")
    os.mkfifo(d / "pipe.png")  # opening a FIFO would block a naive reader forever
    return [
        _failed("permission denied", "locked.png", "unreadable file", "permission denied", needs_non_root=True),
        _failed("unreadable sidecar", "locked_tags.png", "unreadable tags file", "permission denied",
                needs_non_root=True),
        _failed("symlink loop (a)", "loop_a.png", "unreadable file", "symlink loop"),
        _failed("symlink loop (b)", "loop_b.png", "unreadable file", "symlink loop"),
        Case("folder symlink loop is not followed", f"{SHARD}/dir_loop/valid.png", "absent"),
        _failed("symlink pointing outside the root", "escape.png", "unreadable file", "outside"),
        Case("folder symlink outside the root is not followed", f"{SHARD}/escape_dir/secret.png", "absent"),
        _failed("broken symlink", "dangling.png", "unreadable file", "broken symlink"),
        _ok("symlink inside the root", "alias.png", format="PNG"),
        Case("folder named like an image is not an item", f"{SHARD}/folder.png", "absent"),
        _ok("image inside a folder named like an image", "folder.png/inner.png"),
        _ok("nested sub-folders belong to the shard", "nested/deeper/deep.png", tags="1girl"),
        Case("hidden file", f"{SHARD}/.hidden.png", "absent"),
        Case("file in a hidden folder", f"{SHARD}/.cache/thumb.png", "absent"),
        Case("macOS resource fork", f"{SHARD}/._resource_fork.jpg", "absent"),
        _failed("FIFO named like an image", "pipe.png", "unreadable file", "not a regular file"),
    ]


@_writer
def _hostile_files(d: Path, _out: Path) -> list[Case]:
    """Issue 10: files that exhaust memory or decode into garbage."""
    with open(d / "huge.png", "wb") as f:  # sparse: costs no disk, but reading it would cost 600 MB
        f.write(png_bytes(21)[:64])
        f.truncate(600 << 20)
    (d / "tags_utf32.png").write_bytes(png_bytes(22))
    (d / "tags_utf32.txt").write_bytes("1girl blue_eyes".encode("utf-32"))  # with BOM: FF FE 00 00
    (d / "tags_utf16nul.png").write_bytes(png_bytes(23))
    (d / "tags_utf16nul.txt").write_bytes("1girl\x00solo".encode("utf-16"))
    (_out / "se\ncret.png").write_bytes(png_bytes(24))
    (d / "escape_multiline.png").symlink_to(_out / "se\ncret.png")
    return [
        _failed("reason quoting a path with a line break stays one line", "escape_multiline.png", "outside", "se / cret"),
        _failed("600 MB file named .png is refused unread", "huge.png", "unreadable file", "over the limit"),
        _ok("UTF-32 sidecar with BOM", "tags_utf32.png", tags="1girl blue_eyes"),
        _failed("UTF-16 sidecar holding NUL characters", "tags_utf16nul.png", "unreadable tags file", "NUL"),
    ]


def write_folder_corpus(tmp: Path) -> Corpus:
    """Write every folder case into `tmp/source/corpus/` (one shard); files that symlinks point
    out to go to `tmp/outside/`. The source root is `tmp/source`."""
    root, out = tmp / "source", tmp / "outside"
    shard = root / SHARD
    shard.mkdir(parents=True)
    out.mkdir()
    cases = [case for write in _WRITERS for case in write(shard, out)]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return Corpus(root=root, cases=cases)


# -- Parquet ----------------------------------------------------------------------------------

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_parquet_corpus(tmp: Path) -> Corpus:
    """`tmp/parquet/`: `mixed.parquet` (HF `datasets` struct column, row groups of 3) with good
    and bad cells; `raw.parquet` (plain binary column, unusual names); `ints.parquet` and
    `strings.parquet` whose image columns cannot hold image bytes."""
    root = tmp / "parquet"
    root.mkdir(parents=True)
    rows = [  # (image cell, tags cell, expected case)
        ({"bytes": png_bytes(30), "path": "a.png"}, "1girl solo", ("ok", (), "1girl solo")),
        (None, "1girl", ("failed", ("image cell", "is null"), "1girl")),
        ({"bytes": None, "path": "elsewhere/b.png"}, None, ("failed", ("no bytes", "elsewhere/b.png"), None)),
        ({"bytes": None, "path": None}, None, ("failed", ("neither bytes nor a path",), None)),
        ({"bytes": jpeg_bytes(31), "path": None}, "long_hair blue_eyes", ("ok", (), "long_hair blue_eyes")),
        ({"bytes": truncated(jpeg_bytes(32)), "path": None}, "", ("failed", ("truncated image file",), "")),
        ({"bytes": b"<html><body>rate limited</body></html>", "path": None}, None,
         ("failed", ("not an image (looks like HTML)",), None)),
    ]
    table = pa.table({"image": pa.array([r[0] for r in rows], IMAGE_STRUCT),
                      "tags": pa.array([r[1] for r in rows], pa.string())})
    pq.write_table(table, root / "mixed.parquet", row_group_size=3)
    cases = [Case(f"parquet row {i}", f"mixed.parquet#row={i}", status, reason, tags=tags)
             for i, (_image, _tags, (status, reason, tags)) in enumerate(rows)]

    raw = pa.table({"id": [1, 2], "Img": pa.array([png_bytes(33), None], pa.binary()),
                    "tag_string": pa.array([["long hair", "blue eyes"], None], pa.list_(pa.string()))})
    pq.write_table(raw, root / "raw.parquet")
    cases += [Case("binary column named Img, list tags", "raw.parquet#row=0", "ok", tags="long hair, blue eyes"),
              Case("null binary cell", "raw.parquet#row=1", "failed", ("is null",), tags=None)]

    pq.write_table(pa.table({"image": pa.array([1, 2], pa.int64()), "tags": ["a", "b"]}), root / "ints.parquet")
    pq.write_table(pa.table({"image": ["x.png", None]}), root / "strings.parquet")
    cases += [Case(f"int image column row {i}", f"ints.parquet#row={i}", "failed", ("holds int64", "not image bytes"))
              for i in range(2)]
    cases += [Case(f"string image column row {i}", f"strings.parquet#row={i}", "failed",
                   ("holds string", "not image bytes")) for i in range(2)]
    cases += _hostile_parquet(root)
    return Corpus(root=root, cases=cases)


def _hostile_parquet(root: Path) -> list[Case]:
    """Issue 10: files that used to stop the whole run, and charattr's own output in the folder."""
    pq.write_table(pa.table({"id": [1, 2], "caption": ["a", "b"]}), root / "metadata.parquet")  # no image column
    duplicate = pa.Table.from_arrays([pa.array([png_bytes(34)], pa.binary()), pa.array(["1girl"]), pa.array(["1boy"])],
                                     names=["image", "tags", "tags"])
    pq.write_table(duplicate, root / "dupcol.parquet")
    pq.write_table(pa.table({"image": pa.array([png_bytes(35), png_bytes(35)], pa.binary()).dictionary_encode(),
                             "tags": ["1girl", "1boy"]}), root / "dictionary.parquet")
    pq.write_table(pa.table({"image": [png_bytes(36)], "tags": ["line one\nline two"]}), root / "multiline.parquet")
    os.mkfifo(root / "pipe.parquet")  # opening it to read would block forever
    (root / "gone.parquet").symlink_to(root / "missing.parquet")
    # A results table of an earlier `charattr batch --out` written into the folder: not a source.
    pq.write_table(pa.table({"image_id": ["x"], "source_uri": ["y"], "strategy": ["s"], "versions": ["{}"]}),
                   root / "results.parquet")
    return [
        Case("parquet file without an image column", "metadata.parquet", "failed", ("unreadable parquet file", "no image column")),
        Case("parquet file with two columns of one name", "dupcol.parquet", "failed", ("2 columns named 'tags'",)),
        Case("dictionary-encoded image column row 0", "dictionary.parquet#row=0", "ok", tags="1girl"),
        Case("dictionary-encoded image column row 1", "dictionary.parquet#row=1", "ok", tags="1boy"),
        Case("tags spanning two lines", "multiline.parquet#row=0", "ok", tags="line one\nline two"),
        Case("FIFO named .parquet", "pipe.parquet", "failed", ("unreadable parquet file", "not a regular file")),
        Case("broken symlink named .parquet", "gone.parquet", "failed", ("unreadable parquet file", "broken symlink")),
        Case("charattr's own results table in the folder", "results.parquet", "absent"),
    ]


# -- WebDataset -------------------------------------------------------------------------------


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar_corpus(tmp: Path) -> Corpus:
    """`tmp/tars/`: `good.tar` (samples with every tags flavour, odd names, a link member),
    `cut.tar` (cut off inside its third image), `cut_header.tar` (cut inside the header of its
    second sample) and `garbled.tar` (that header overwritten)."""
    root = tmp / "tars"
    root.mkdir(parents=True)
    with tarfile.open(root / "good.tar", "w") as tar:
        add_member(tar, "0001.jpg", jpeg_bytes(40))
        add_member(tar, "0001.txt", b"1girl solo")
        add_member(tar, "0002.png", png_bytes(41))
        add_member(tar, "0002.json", b'{"id": 2, "tags": ["long hair", "smile"]}')
        add_member(tar, "sub/0003.webp", encode(picture(seed=42), "WEBP"))
        add_member(tar, "sub/0003.tags", b"1boy")
        add_member(tar, "sub/0003.txt", b"ignored: .tags is preferred")
        add_member(tar, "../../escape.jpg", jpeg_bytes(43))  # only a key: never extracted
        add_member(tar, "../../escape.txt", b"traversal")
        add_member(tar, "0004.jpg", jpeg_bytes(44))  # no tags member
        add_member(tar, "0005.jpg", jpeg_bytes(45))
        add_member(tar, "0005.txt", b"bad\x00tags")
        add_member(tar, "0006.jpg", jpeg_bytes(46))
        add_member(tar, "0006.seg.png", png_bytes(47))  # two images in one sample share its tags
        add_member(tar, "0006.txt", b"2girls")
        add_member(tar, "0007.json", b"{not json")
        add_member(tar, "0007.png", b"")
        add_member(tar, "._0008.jpg", b"\x00\x05\x16\x07")  # macOS resource fork
        link = tarfile.TarInfo("0009.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        add_member(tar, "0010.cls", b"3")  # a sample without images: nothing to yield
    cut_members = [("a.jpg", jpeg_bytes(50)), ("a.txt", b"1girl"), ("b.png", png_bytes(51)), ("c.jpg", jpeg_bytes(52))]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in cut_members:
            add_member(tar, name, data)
    whole = buf.getvalue()
    c_start = whole.index(cut_members[3][1])
    (root / "cut.tar").write_bytes(whole[: c_start + 200])
    second_header = whole.index(b"b.png")  # where the second member's header starts
    (root / "cut_header.tar").write_bytes(whole[: second_header + 100])
    (root / "garbled.tar").write_bytes(whole[:second_header] + b"\x07" * 512 + whole[second_header + 512:])
    cases = [
        Case("tar sample with .txt", "good.tar#0001.jpg", "ok", tags="1girl solo", format="JPEG"),
        Case("tar sample with .json tags list", "good.tar#0002.png", "ok", tags="long hair, smile"),
        Case("tar sample in a folder, .tags preferred", "good.tar#sub/0003.webp", "ok", tags="1boy", format="WEBP"),
        Case("path traversal member name", "good.tar#../../escape.jpg", "ok", tags="traversal"),
        Case("tar sample without tags", "good.tar#0004.jpg", "ok", tags=None),
        Case("binary .txt member", "good.tar#0005.jpg", "failed", ("unreadable tags file", "NUL")),
        Case("two images share a sample: first", "good.tar#0006.jpg", "ok", tags="2girls"),
        Case("two images share a sample: second", "good.tar#0006.seg.png", "ok", tags="2girls", format="PNG"),
        Case("empty image and bad json", "good.tar#0007.png", "failed", ("empty file", "not valid JSON")),
        Case("hidden member", "good.tar#._0008.jpg", "absent"),
        Case("symlink member", "good.tar#0009.jpg", "failed", ("link",)),
        Case("truncated tar: before the cut", "cut.tar#a.jpg", "ok", tags="1girl"),
        Case("truncated tar: before the cut (2)", "cut.tar#b.png", "ok", tags=None),
        Case("truncated tar: the member cut off", "cut.tar#c.jpg", "failed", ("unreadable tar file", "truncated")),
        Case("tar cut inside a header: before", "cut_header.tar#a.jpg", "ok", tags="1girl"),
        Case("tar cut inside a header", "cut_header.tar#", "failed", ("unreadable tar file", "after member 'a.txt'")),
        Case("tar with a garbled header: before", "garbled.tar#a.jpg", "ok", tags="1girl"),
        Case("tar with a garbled header", "garbled.tar#", "failed", ("unreadable tar file", "after member 'a.txt'")),
    ]
    cases += _hostile_tars(root)
    return Corpus(root=root, cases=cases)


def duplicate_member_tar(path: Path) -> tuple[bytes, bytes]:
    """A tar holding `x.jpg` twice (as `tar -r` appends) with different images; (first, second)."""
    first, second = jpeg_bytes(60), jpeg_bytes(61)
    with tarfile.open(path, "w") as tar:
        add_member(tar, "x.jpg", first)
        add_member(tar, "x.txt", b"1girl")
        add_member(tar, "y.jpg", jpeg_bytes(62))
        add_member(tar, "x.jpg", second)
    return first, second


def crafted_tar(path: Path, kind: str) -> None:
    """A shard that hangs or stalls Python 3.11's tarfile: kind "negative" (a size field pointing
    back to the previous header, CVE-2025-8194), "pax_negative" (the same size in a pax record)
    or "pax" (a 1 MB pax header, CVE-2024-6232).
    Its first member, `a.jpg`, is intact."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, "a.jpg", jpeg_bytes(63))
        add_member(tar, "a.txt", b"1girl")
        info = tarfile.TarInfo("b.jpg")
        data = jpeg_bytes(64)
        info.size = len(data)
        if kind == "pax":
            info.pax_headers = {"comment": "x" * 1_000_000}
        elif kind == "pax_negative":  # the pax record overrides the header's size: a loop again
            info.pax_headers = {"size": "-2048"}
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if kind == "negative":
        at = raw.index(b"b.jpg")  # the header of b.jpg: its size now says -1024 (back one header)
        header = bytearray(raw[at:at + 512])
        header[124:136] = b"\xff" + ((1 << 88) - 1024).to_bytes(11, "big")
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        raw = raw[:at] + bytes(header) + raw[at + 512:]
    path.write_bytes(raw)


def _hostile_tars(root: Path) -> list[Case]:
    """Issue 10 (and 9): shards that used to stop the run or mix two items up. (The shards that
    hung it, `crafted_tar`, are tested on their own with a time limit: tests/test_security.py.)"""
    duplicate_member_tar(root / "dup.tar")
    (root / "gzip.tar").write_bytes(gzip.compress((root / "dup.tar").read_bytes()))
    os.mkfifo(root / "pipe.tar")
    (root / "gone.tar").symlink_to(root / "missing.tar")
    return [
        Case("duplicate member name: first", "dup.tar#x.jpg", "ok", tags="1girl"),
        Case("duplicate member name: second, its own uri", "dup.tar#x.jpg#2", "ok", tags=None),
        Case("between the duplicates", "dup.tar#y.jpg", "ok"),
        Case("gzip file named .tar", "gzip.tar#", "failed", ("unreadable tar file", "gzip-compressed")),
        Case("FIFO named .tar", "pipe.tar#", "failed", ("unreadable tar file", "not a regular file")),
        Case("broken symlink named .tar", "gone.tar#", "failed", ("unreadable tar file", "broken symlink")),
    ]
