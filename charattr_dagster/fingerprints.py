"""Shard fingerprints: what a shard holds, cheaply, without reading image bytes.

A shard's fingerprint is a hash of its files' relative paths, sizes and modification times (for
a Parquet or tar shard: the one file's size and mtime). `raw_images` records it per partition (as
the partition's data version in a one-shard run, and always in the partition's metadata), and the
shard sensor and backfill schedule compare it with the source's current fingerprint: a folder
that kept filling after it was registered, or lost or changed files, is materialized again. The
results cache makes the unchanged images free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import dagster as dg
import xxhash

from charattr_core.sources import ROOT_SHARD, Source, is_hidden

from .asset_keys import RAW_IMAGES

FINGERPRINT = "fingerprint"  # the metadata entry of raw_images that holds it


def _walk(top: Path, recursive: bool) -> Iterable[tuple[str, os.stat_result]]:
    """(relative path, stat) of the visible files below `top` (symlinks not followed)."""
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # reading the shard reports the unreadable folder as a failed row
        for entry in entries:
            if is_hidden(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    stack.append(Path(entry.path))
                continue
            try:
                yield os.path.relpath(entry.path, top), entry.stat(follow_symlinks=False)
            except OSError:
                continue


def shard_location(source: Source, shard: str) -> tuple[Path, bool]:
    """The file or folder behind `shard` and whether its sub-folders belong to it (the source's
    own key-to-path rules, which refuse keys that are not its shards)."""
    if source.kind == "folder":
        return source._shard_dir(shard), shard != ROOT_SHARD  # type: ignore[attr-defined]
    return source._shard_file(shard), False  # type: ignore[attr-defined]


def shard_fingerprint(source: Source, shard: str) -> str:
    """`<files>f-<hash>`: the number of files and a hash of their paths, sizes and mtimes."""
    location, recursive = shard_location(source, shard)
    if location.is_file():
        stat = location.stat()
        files = [(location.name, stat)]
    else:
        files = sorted(_walk(location, recursive), key=lambda item: item[0])
    digest = xxhash.xxh3_64()
    for rel, stat in files:
        digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return f"{len(files)}f-{digest.hexdigest()}"


def source_fingerprints(source: Source, shards: Iterable[str]) -> dict[str, str]:
    """Current fingerprints; a shard that vanished or cannot be read is left out."""
    found = {}
    for shard in shards:
        try:
            found[shard] = shard_fingerprint(source, shard)
        except Exception:  # noqa: BLE001 - a vanished shard is not a changed one; reading it says why
            continue
    return found


def recorded_fingerprints(instance: dg.DagsterInstance, shards: Iterable[str] | None = None) -> dict[str, str]:
    """Per partition, the fingerprint that the latest raw_images materialization recorded (two
    queries: the latest event id per partition, then those events)."""
    key = dg.AssetKey(RAW_IMAGES)
    latest = instance.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(shards) if shards is not None else None)
    if not latest:
        return {}
    recorded: dict[str, str] = {}
    ids = list(latest.values())
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk),
                                                  limit=len(chunk)).records
        for record in records:
            mat = record.asset_materialization
            value = mat.metadata.get(FINGERPRINT) if mat else None
            if mat is not None and mat.partition and value is not None:
                recorded[mat.partition] = str(getattr(value, "value", value))
    return recorded


def changed_shards(current: Mapping[str, str], recorded: Mapping[str, str]) -> list[str]:
    """Shards materialized before whose content differs now (never-materialized ones are not
    "changed": they are missing, and requested as such)."""
    return [k for k, fp in current.items() if k in recorded and recorded[k] != fp]
