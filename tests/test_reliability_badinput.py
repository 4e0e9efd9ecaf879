"""The whole bad-input corpus (tests/badinput.py) end to end: the real `charattr batch` command
and the Dagster assets `raw_images` … `fused_attributes`.

Every case gives either a failed row whose reason names what is wrong or a result, the run
completes, its summary counts the failures, and no traceback reaches the user.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent / "dagster"))  # the Dagster tests' helpers (dagster_testing)

from badinput import IS_ROOT, SHARD, Case, Corpus, check, write_folder_corpus, write_parquet_corpus, write_tar_corpus
from charattr_core.records import ImageRecord
from charattr_dagster.definitions import build_definitions
from charattr_dagster.warehouse import Warehouse
from dagster_testing import check_evaluations, make_settings, materialization, register, run_job

BIN = Path(sys.executable).parent
TINY = ["--model", "charattr-tiny", "--pretrained", "random", "--device", "cpu"]
CORPORA = {"folder": write_folder_corpus, "parquet": write_parquet_corpus, "webdataset": write_tar_corpus}
# Cases whose image bytes appear nowhere else in their corpus, with the gender their tags name:
# the result must come from their own tags ("1girl" / "1boy").
TAGGED = {"nested sub-folders belong to the shard": "female", "parquet row 0": "female",
          "tar sample with .txt": "female", "tar sample in a folder, .tags preferred": "male"}

pytestmark = pytest.mark.slow


def expected_status(case: Case) -> str:
    # Root reads files without read permission, so the permission cases are fine images then.
    return "ok" if case.needs_non_root and IS_ROOT else case.status


def split_cases(corpus: Corpus) -> tuple[list[Case], list[Case], list[Case]]:
    """(ok, failed, absent) cases as this user must see them."""
    by = {status: [c for c in corpus.cases if expected_status(c) == status] for status in ("ok", "failed", "absent")}
    return by["ok"], by["failed"], by["absent"]


def failed_reasons_ok(error: str | None, case: Case) -> list[str]:
    return [w for w in case.reason if w.lower() not in (error or "").lower()]


@pytest.mark.parametrize("kind", list(CORPORA))
def test_charattr_batch_completes_over_the_whole_corpus(kind, tmp_path):
    corpus = CORPORA[kind](tmp_path)
    ok, failed, absent = split_cases(corpus)
    out, failures = tmp_path / "results.parquet", tmp_path / "failures.csv"
    done = subprocess.run(
        [str(BIN / "charattr"), "batch", str(corpus.root), "--out", str(out), "--failures", str(failures),
         "--quiet", "--batch-size", "4", "--database-url", f"sqlite:///{tmp_path / 'cache.db'}", *TINY],
        capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    n_items = len(ok) + len(failed)
    assert f"{n_items} images, {len(failed)} failed, {len(ok)} rows written" in done.stderr, done.stderr
    tallied = sum(int(n) for n in re.findall(r"^  failed: (\d+) x ", done.stderr, flags=re.M))
    assert tallied == len(failed)  # every failure is counted under a reason

    rows = {r["source_uri"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == sorted(corpus.uri(c) for c in ok)  # one result per valid image, nothing else
    with failures.open(encoding="utf-8", newline="") as f:
        failed_rows = {r["source_uri"]: r for r in csv.DictReader(f)}
    assert sorted(failed_rows) == sorted(corpus.uri(c) for c in failed)
    problems = [f"{c.name}: {failed_rows[corpus.uri(c)]['error']!r} lacks {missing}" for c in failed
                if (missing := failed_reasons_ok(failed_rows[corpus.uri(c)]["error"], c))]
    assert not problems, problems
    assert all("Traceback" not in r["error"] and "\n" not in r["error"] for r in failed_rows.values())
    for case in absent:
        assert corpus.uri(case) not in rows and corpus.uri(case) not in failed_rows, case.name
    for case in corpus.cases:
        if case.name in TAGGED:
            row = rows[corpus.uri(case)]
            assert row["gender"] == [TAGGED[case.name]], (case.name, row["gender"])
            assert json.loads(row["evidence"])["gender"], case.name  # with the tag that said so


def test_dagster_assets_complete_over_the_whole_corpus_as_one_partition(tmp_path):
    corpus = write_folder_corpus(tmp_path)
    ok, failed, absent = split_cases(corpus)
    settings = make_settings(corpus.root, tmp_path, max_failed_fraction=1.0, batch_size=4)
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        register(instance, [SHARD])
        ingest = run_job(defs, instance, "ingest_shards", [SHARD])
        fuse = run_job(defs, instance, "fuse_shards", [SHARD])
        events = [*instance.all_logs(ingest.run_id), *instance.all_logs(fuse.run_id)]
    assert ingest.success and fuse.success
    assert not [e for e in events if e.dagster_event and e.dagster_event.is_step_failure]

    raw = materialization(ingest, "raw_images")
    assert (raw["rows"], raw["ok"], raw["failed"]) == (len(ok) + len(failed), len(ok), len(failed))
    check_result = check_evaluations(ingest)["raw_images.failed_fraction"]
    assert check_result.passed  # the bound was raised to 1.0, so the shard goes on to the later stages
    assert check_result.metadata["failed"].value == len(failed)
    reasons = check_result.metadata["reasons"].value.records
    assert sum(int(r.data["count"]) for r in reasons) == len(failed)

    warehouse = Warehouse(root=settings.warehouse)
    records = {r["source_uri"]: ImageRecord.from_dict(r) for r in warehouse.iter_rows("raw_images", [SHARD])}
    assert len(records) == len(ok) + len(failed)
    problems = []
    for case in corpus.cases:
        record = records.get(corpus.uri(case))
        if expected_status(case) != case.status:  # a permission case read by root
            problems += [] if record is not None and record.ok else [f"{case.name}: {record}"]
        else:
            problems += check(record, case)
    assert not problems, problems
    assert all("Traceback" not in (r.error or "") for r in records.values())

    fused = {r["source_uri"]: r for r in warehouse.iter_rows("fused_attributes", [SHARD])}
    assert sorted(fused) == sorted(corpus.uri(c) for c in ok)
    assert materialization(fuse, "fused_attributes")["rows"] == len(ok)
    deep = fused[corpus.uri(next(c for c in corpus.cases if c.name in TAGGED))]
    assert deep["gender"] == ["female"]
    for case in absent:
        assert corpus.uri(case) not in records


# -- issue 9/10: one item, one key, its own bytes ---------------------------------------------


def test_tar_members_of_the_same_name_each_get_their_own_result(tmp_path):
    """`tar -r` appends a second `x.jpg`: each is its own item (uri `...#x.jpg`, `...#x.jpg#2`), with
    its own image id and embedding, in `charattr batch` and in the Dagster assets alike."""
    from badinput import duplicate_member_tar
    from charattr_core.sources.hashing import content_hash

    root = tmp_path / "tars"
    root.mkdir()
    first, second = duplicate_member_tar(root / "dup.tar")
    want = {f"{root}/dup.tar#x.jpg": content_hash(first), f"{root}/dup.tar#x.jpg#2": content_hash(second)}
    out, db = tmp_path / "r.parquet", tmp_path / "cache.db"
    for attempt in ("computed", "from the cache"):
        done = subprocess.run([str(BIN / "charattr"), "batch", str(root), "--out", str(out), "--quiet",
                               "--database-url", f"sqlite:///{db}", *TINY], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        rows = {r["source_uri"]: r for r in pq.read_table(out).to_pylist()}
        assert {uri: rows[uri]["image_id"] for uri in want} == want, attempt
        assert len(rows) == 3
    import sqlite3
    with sqlite3.connect(db) as conn:  # an embedding is stored under each image's own id
        stored = {r[0] for r in conn.execute("SELECT image_id FROM stage_results WHERE stage = 'clip_embeddings'")}
    assert set(want.values()) <= stored

    settings = make_settings(root, tmp_path / "dagster", max_failed_fraction=1.0, batch_size=4)
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        register(instance, ["dup.tar"])
        assert run_job(defs, instance, "ingest_shards", ["dup.tar"]).success
    warehouse = Warehouse(root=settings.warehouse)
    raw = {r["source_uri"]: r["image_id"] for r in warehouse.iter_rows("raw_images", ["dup.tar"])}
    assert {uri: raw[uri] for uri in want} == want
    embedded = {r["image_id"]: r["embedding"] for r in warehouse.iter_rows("clip_embeddings", ["dup.tar"])}
    assert embedded[want[f"{root}/dup.tar#x.jpg"]] != embedded[want[f"{root}/dup.tar#x.jpg#2"]]


def test_dagster_registers_and_stores_non_utf8_and_very_long_shard_names(tmp_path):
    from badinput import png_bytes
    from charattr_core.sources import open_source

    root = tmp_path / "src"
    names = [os.fsdecode(b"caf\xe9"), "キャラクター画像フォルダ" * 3, "long-" * 50]
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        (root / name / os.fsdecode(b"img\xe9.png" if i == 0 else b"img.png")).write_bytes(png_bytes(400 + i))
    keys = open_source(root).shards()
    assert len(keys) == 3 and all(k.encode("utf-8") for k in keys)
    settings = make_settings(root, tmp_path / "dagster", max_failed_fraction=1.0, batch_size=4)
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        register(instance, keys)
        for key in keys:
            result = run_job(defs, instance, "ingest_shards", [key])
            assert result.success and materialization(result, "raw_images")["ok"] == 1
    warehouse = Warehouse(root=settings.warehouse)
    assert warehouse.partitions("raw_images") == sorted(keys)  # cut file names map back to their keys
    assert all(len(p.name.encode()) <= 255 for p in warehouse.asset_dir("raw_images").iterdir())
