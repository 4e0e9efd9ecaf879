"""Shard fingerprints: cheap, and changed by anything that changes what a shard holds."""

from __future__ import annotations

import os

from charattr_core.sources import open_source
from charattr_dagster.fingerprints import changed_shards, shard_fingerprint


def test_a_fingerprint_changes_with_added_edited_and_deleted_files_only(demo_source):
    source = open_source(demo_source)
    shard = source.shards()[0]
    folder = demo_source / shard
    first = shard_fingerprint(source, shard)
    assert first == shard_fingerprint(source, shard)
    (folder / ".partial.png.tmp").write_bytes(b"x")  # hidden: an rsync temporary is not content
    assert shard_fingerprint(source, shard) == first

    image = sorted(folder.glob("*.png"))[0]
    stat = image.stat()
    image.write_bytes(image.read_bytes())  # same size, rewritten in place: a new mtime
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    edited = shard_fingerprint(source, shard)
    assert edited != first

    (folder / "extra.png").write_bytes(image.read_bytes())
    added = shard_fingerprint(source, shard)
    assert added not in (first, edited) and added.startswith(f"{len(list(folder.iterdir())) - 1}f-")
    (folder / "extra.png").unlink()
    assert shard_fingerprint(source, shard) == edited


def test_only_shards_seen_before_can_be_changed():
    assert changed_shards({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9"}) == ["b"]
