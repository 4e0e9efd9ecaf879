"""Property tests (Hypothesis): random folders with sidecars, tar shards and Parquet files, with
random structure and random corruption, read by the real pipeline (tags only, no cache).

Invariants, for every generated input:
- the run ends (each test has a time limit) and raises nothing: no traceback;
- every good item has exactly one result, and it is its own: the image id is the hash of its own
  bytes and the gender comes from its own tags ("1girl" -> female, "1boy" -> male);
- every bad item is one failed record whose reason is one non-empty line;
- no input file changes.

The default profile keeps the whole module to well under a minute; `make fuzz` runs the "fuzz"
profile (CHARATTR_HYPOTHESIS_PROFILE=fuzz), with many more examples.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badinput import add_member, encode, jpeg_bytes, picture, png_bytes, truncated
from charattr_core.pipeline import create_pipeline
from charattr_core.sources.hashing import content_hash

settings.register_profile("ci", max_examples=15, deadline=None, database=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", max_examples=400, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("CHARATTR_HYPOTHESIS_PROFILE", "ci"))

pytestmark = pytest.mark.timeout(300)  # a reader that loops fails here instead of hanging CI

GOOD_IMAGES = [png_bytes(500), jpeg_bytes(501), encode(picture(seed=502), "WEBP"), png_bytes(503), jpeg_bytes(504)]
BAD_IMAGES = [b"", truncated(png_bytes(505)), truncated(jpeg_bytes(506)), b"<html>not found</html>",
              bytes(range(256)) * 4]
GENDER = {"1girl": "female", "1boy": "male"}

good_image = st.sampled_from(GOOD_IMAGES)
bad_image = st.sampled_from(BAD_IMAGES)
tags_text = st.sampled_from(list(GENDER))
# A sidecar / tags member: (bytes, usable?) -- good encodings and bad ones.
tags_file = st.one_of(
    tags_text.map(lambda t: (t.encode(), t)),
    tags_text.map(lambda t: (t.encode("utf-16"), t)),
    tags_text.map(lambda t: (t.encode("utf-32"), t)),
    tags_text.map(lambda t: (("\ufeff" + t).encode(), t)),
    st.just((b"1girl\x00\x01", None)),
    st.just(("1girl café".encode("latin-1"), None)),
)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def run(root: Path):
    """Every (record, fused) of the source, keyed by uri; uris must be unique."""
    with create_pipeline({"use_clip": False, "cache_results": False}) as pipe:
        pairs = list(pipe.iter_results(root, batch_size=7))
    counts = Counter(r.source_uri for r, _f in pairs)
    assert not [u for u, n in counts.items() if n > 1], "two results share a uri"
    return {r.source_uri: (r, f) for r, f in pairs}


def assert_good(result, data: bytes, tags: str) -> None:
    record, fused = result
    assert record.ok and fused is not None, record.error
    assert record.image_id == content_hash(data) == fused.image_id
    assert fused.attributes["gender"].values == (GENDER[tags],)


def assert_failed(result) -> None:
    record, fused = result
    assert record.status == "failed" and fused is None
    assert record.error and record.error.strip() and "\n" not in record.error and "Traceback" not in record.error


# -- folders with sidecars ----------------------------------------------------------------------

folder_entry = st.tuples(st.booleans(), good_image, bad_image, st.one_of(st.none(), tags_file),
                         st.sampled_from([".png", ".jpg", ".PNG", ".webp"]))


@given(entries=st.lists(folder_entry, min_size=1, max_size=8), shards=st.integers(1, 3))
def test_random_folders_keep_every_guarantee(entries, shards):
    with tempfile.TemporaryDirectory(prefix="charattr-prop-") as tmp:
        root = Path(tmp) / "src"
        expected = {}
        for i, (is_good, good, bad, sidecar, suffix) in enumerate(entries):
            folder = root / f"shard{i % shards}"
            folder.mkdir(parents=True, exist_ok=True)
            image = folder / f"img{i}{suffix}"
            image.write_bytes(good if is_good else bad)
            tags = None
            if sidecar is not None:
                (folder / f"img{i}{suffix}.txt").write_bytes(sidecar[0])
                tags = sidecar[1]
            usable = is_good and (sidecar is None or tags is not None)
            expected[str(image)] = (usable, good, tags)
        before = snapshot(root)
        results = run(root)
        assert set(results) == set(expected)
        for uri, (usable, data, tags) in expected.items():
            if usable and tags is not None:
                assert_good(results[uri], data, tags)
            elif usable:
                assert results[uri][0].ok and results[uri][0].image_id == content_hash(data)
            else:
                assert_failed(results[uri])
        assert snapshot(root) == before


# -- tar shards ---------------------------------------------------------------------------------

tar_member = st.tuples(st.sampled_from(["a", "b", "c", "d/e", "f.g"]), st.booleans(), good_image, bad_image,
                       st.one_of(st.none(), tags_file))
corruption = st.one_of(
    st.none(),
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("garble"), st.floats(0.0, 1.0)),
    st.tuples(st.just("negative"), st.integers(1, 64)),
    st.tuples(st.just("pax"), st.just(0)),
)


def build_tar(samples) -> tuple[bytes, list[tuple[str, int, int, bytes, bool, str | None]]]:
    """The tar bytes and, per image member: (item key, header offset, end offset, bytes, good, tags).
    Keys repeat on purpose (a small pool of names): duplicates get `#2`, `#3`, ..."""
    buf = io.BytesIO()
    members, seen = [], Counter()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for key, is_good, good, bad, sidecar in samples:
            start = buf.tell()
            data = good if is_good else bad
            add_member(tar, f"{key}.jpg", data)
            if sidecar is not None:
                add_member(tar, f"{key}.txt", sidecar[0])
            seen[f"{key}.jpg"] += 1
            n = seen[f"{key}.jpg"]
            item_key = f"{key}.jpg" if n == 1 else f"{key}.jpg#{n}"
            tags = sidecar[1] if sidecar is not None else None
            usable = is_good and (sidecar is None or tags is not None)
            members.append((item_key, start, buf.tell(), data, usable, tags, sidecar is not None))
    return buf.getvalue(), members


def corrupt(raw: bytes, how) -> tuple[bytes, int]:
    """(corrupted bytes, offset before which nothing changed)."""
    if how is None:
        return raw, len(raw)
    kind, amount = how
    if kind == "truncate":
        cut = int(len(raw) * amount)
        return raw[:cut], cut
    if kind == "garble":
        at = min(int(len(raw) * amount) // 512 * 512, max(0, len(raw) - 512))
        return raw[:at] + bytes(range(256)) * 2 + raw[at + 512:], at
    headers = [i for i in range(0, len(raw) - 512, 512) if raw[i + 257:i + 262] == b"ustar"]
    if not headers:
        return raw, len(raw)
    at = headers[amount % len(headers)] if kind == "negative" else headers[-1]
    header = bytearray(raw[at:at + 512])
    if kind == "negative":
        header[124:136] = b"\xff" + ((1 << 88) - 512 * amount).to_bytes(11, "big")
    else:  # turn the last header into a 1 MB pax header (its data runs past the end of the file)
        header[156:157] = b"x"
        header[124:136] = b"%011o\0" % 1_000_000
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return raw[:at] + bytes(header) + raw[at + 512:], at


@given(samples=st.lists(tar_member, min_size=1, max_size=8), how=corruption)
def test_random_tar_shards_keep_every_guarantee(samples, how):
    raw, members = build_tar(samples)
    raw, intact = corrupt(raw, how)
    with tempfile.TemporaryDirectory(prefix="charattr-prop-") as tmp:
        root = Path(tmp) / "tars"
        root.mkdir()
        (root / "shard.tar").write_bytes(raw)
        before = snapshot(root)
        results = run(root)
        for record, _fused in results.values():
            if not record.ok:
                assert_failed((record, None))
        # Adjacent members of one key form one sample and share its tags: such runs are left out.
        base = [m[0].split("#")[0] for m in members]
        shared = {i for i in range(len(members)) if (i and base[i - 1] == base[i])
                  or (i + 1 < len(members) and base[i + 1] == base[i])}
        for i, (key, _start, end, data, usable, tags, _has_tags) in enumerate(members):
            if end > intact or i in shared:
                continue  # damaged, or tags that may come from a neighbour
            uri = f"{root}/shard.tar#{key}"
            assert uri in results, (uri, sorted(results))
            if usable and tags is not None:
                assert_good(results[uri], data, tags)
            elif usable:
                assert results[uri][0].ok and results[uri][0].image_id == content_hash(data)
            else:
                assert_failed(results[uri])
        assert snapshot(root) == before


# -- Parquet files ------------------------------------------------------------------------------

cell = st.one_of(st.none(), good_image, bad_image)
tags_cell = st.one_of(st.none(), tags_text, st.lists(tags_text, min_size=1, max_size=2))


@given(rows=st.lists(st.tuples(cell, tags_cell), min_size=1, max_size=12),
       layout=st.sampled_from(["binary", "struct", "dictionary", "no_image_column", "duplicate_image", "int_image"]),
       row_group=st.integers(1, 5), damage=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_random_parquet_files_keep_every_guarantee(rows, layout, row_group, damage):
    images = [r[0] for r in rows]
    tags = [", ".join(t) if isinstance(t, list) else t for t in (r[1] for r in rows)]
    tags_array = pa.array(tags, pa.string())
    if layout == "struct":
        column = pa.array([None if b is None else {"bytes": b, "path": None} for b in images],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    elif layout == "int_image":
        column = pa.array([len(b) if b is not None else None for b in images], pa.int64())
    else:
        column = pa.array(images, pa.binary())
        if layout == "dictionary":
            column = column.dictionary_encode()
    names = {"no_image_column": ["caption", "tags"], "duplicate_image": ["image", "image"]}.get(layout, ["image", "tags"])
    arrays = ([column, column] if layout == "duplicate_image" else [tags_array, tags_array]
              if layout == "no_image_column" else [column, tags_array])
    with tempfile.TemporaryDirectory(prefix="charattr-prop-") as tmp:
        root = Path(tmp) / "pq"
        root.mkdir()
        path = root / "part.parquet"
        pq.write_table(pa.Table.from_arrays(arrays, names=names), path, row_group_size=row_group)
        damaged = damage is not None
        if damaged:
            raw = path.read_bytes()
            at = int(len(raw) * damage)
            path.write_bytes(raw[:at] + bytes(b ^ 0x5A for b in raw[at:at + 64]) + raw[at + 64:])
        before = snapshot(root)
        results = run(root)
        assert snapshot(root) == before
        for record, _fused in results.values():
            if not record.ok:
                assert_failed((record, None))
        if layout in ("no_image_column", "duplicate_image", "int_image") and not damaged:
            assert all(not r.ok for r, _f in results.values()) and results
            return
        if damaged:
            return  # anything may be lost, but nothing raised, changed or was reported on two lines
        assert sorted(results) == sorted(f"{path}#row={i}" for i in range(len(rows)))
        for i, (image, tag) in enumerate(zip(images, tags)):
            result = results[f"{path}#row={i}"]
            if image in GOOD_IMAGES and tag in GENDER:
                assert_good(result, image, tag)
            elif image in GOOD_IMAGES:
                assert result[0].ok and result[0].image_id == content_hash(image)
            else:
                assert_failed(result)
