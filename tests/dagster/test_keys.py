"""Keys and validity on the Dagster path (issue 9): the product table keeps one row per image and
tags, clip_embeddings never stores a result under an id its bytes do not hash to, and a policy
or probes trained for one CLIP model are not used (nor reported) by a run with another or none."""

from __future__ import annotations

import io
import json
from pathlib import Path

import dagster as dg
from PIL import Image

from charattr_core.store import ResultStore
from charattr_dagster.asset_keys import (CLIP_EMBEDDINGS, FUSED_ATTRIBUTES, FUSION_POLICY, RAW_IMAGES,
                                       TAG_PARSES)
from charattr_dagster.definitions import build_definitions
from charattr_dagster.warehouse import Warehouse

from dagster_testing import SHARD_KEYS, make_settings, materialization, register, run_job


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def test_the_same_picture_under_two_tag_sets_gives_two_product_rows_reused_on_rerun(tmp_path, instance):
    shard = tmp_path / "src" / "reposts"
    shard.mkdir(parents=True)
    picture = _png("blue")
    for name, tags in (("a", "1girl, blonde_hair"), ("b", "1girl, red_hair")):
        (shard / f"{name}.png").write_bytes(picture)
        (shard / f"{name}.txt").write_text(tags, encoding="utf-8")
    settings = make_settings(tmp_path / "src", tmp_path, use_clip=False)
    defs = build_definitions(settings)
    register(instance, ["reposts"])

    first = run_job(defs, instance, "process_shards", ["reposts"])
    fused = materialization(first, FUSED_ATTRIBUTES)
    assert (fused["computed"], fused["database_rows_written"]) == (2, 2)
    with ResultStore(settings.database_url) as store:
        table = {Path(r["source_uri"]).name: r for r in store.iter_fused(fused["stage_version"])}
    assert set(table) == {"a.png", "b.png"} and table["a.png"]["image_id"] == table["b.png"]["image_id"]
    assert table["a.png"]["payload"]["attributes"]["hair_color"]["values"] == ["blonde"]
    assert table["b.png"]["payload"]["attributes"]["hair_color"]["values"] == ["red"]
    parquet = {Path(r["source_uri"]).name: r["hair_color"]
               for r in Warehouse(root=settings.warehouse).iter_rows(FUSED_ATTRIBUTES, ["reposts"])}
    assert parquet == {"a.png": ["blonde"], "b.png": ["red"]}

    again = run_job(defs, instance, "process_shards", ["reposts"])
    for asset in ("tag_parses", FUSED_ATTRIBUTES):
        meta = materialization(again, asset)
        assert (meta["computed"], meta["skipped"]) == (0, 2), asset
    assert materialization(again, FUSED_ATTRIBUTES)["database_rows_written"] == 0
    with ResultStore(settings.database_url) as store:
        assert store.count_fused(fused["stage_version"]) == 2


def test_a_file_changed_after_ingest_is_a_failed_embedding_and_nothing_is_cached(demo_source, tmp_path, instance):
    settings = make_settings(demo_source, tmp_path)
    defs = build_definitions(settings)
    register(instance)
    shard = SHARD_KEYS[0]
    job = defs.resolve_implicit_global_asset_job_def()
    job.execute_in_process(instance=instance, partition_key=shard, asset_selection=[dg.AssetKey(RAW_IMAGES)])
    wh = Warehouse(root=settings.warehouse)
    raw = list(wh.iter_rows(RAW_IMAGES, [shard]))
    victim = raw[0]
    Path(victim["source_uri"]).write_bytes(_png("purple"))  # another picture at the same path

    result = job.execute_in_process(instance=instance, partition_key=shard,
                                    asset_selection=[dg.AssetKey(CLIP_EMBEDDINGS), dg.AssetKey(TAG_PARSES)])
    meta = materialization(result, CLIP_EMBEDDINGS)
    rows = {r["image_id"]: r for r in wh.iter_rows(CLIP_EMBEDDINGS, [shard])}
    assert rows[victim["image_id"]]["embedding"] is None
    assert rows[victim["image_id"]]["error"].startswith("The file changed since it was ingested")
    assert all(r["embedding"] is not None for i, r in rows.items() if i != victim["image_id"])
    assert meta["failed"] == 1
    with ResultStore(settings.database_url) as store:
        cached = store.get_many("clip_embeddings", meta["stage_version"], [r["image_id"] for r in raw])
    assert victim["image_id"] not in cached and len(cached) == len(raw) - 1

    # Fusing the shard answers for the image without CLIP, but caches nothing for it either.
    fuse = run_job(defs, instance, "fuse_shards", [shard])
    fused = materialization(fuse, FUSED_ATTRIBUTES)
    row = next(r for r in wh.iter_rows(FUSED_ATTRIBUTES, [shard]) if r["image_id"] == victim["image_id"])
    assert "clip embedding missing" in row["notes"]
    with ResultStore(settings.database_url) as store:
        assert victim["image_id"] not in {r.image_id for r in store.iter_results(FUSED_ATTRIBUTES, fused["stage_version"])}
        assert victim["image_id"] not in store.fused_ids(fused["stage_version"], [victim["image_id"]])


def test_a_policy_trained_with_one_model_is_not_used_or_reported_by_a_run_without_clip(demo_source, tmp_path, instance):
    with_clip = build_definitions(make_settings(demo_source, tmp_path))
    register(instance)
    run_job(with_clip, instance, "ingest_shards", list(SHARD_KEYS))
    trained = materialization(run_job(with_clip, instance, "train_fusion"), FUSION_POLICY)
    assert trained["skipped"] is False and trained["published"] is True
    fused = materialization(run_job(with_clip, instance, "fuse_shards", list(SHARD_KEYS)), FUSED_ATTRIBUTES)
    assert fused["policy_used"] is True and fused["signals"]["clip"] == "used: charattr-tiny/random"

    without_clip = build_definitions(make_settings(demo_source, tmp_path, use_clip=False))
    run_job(without_clip, instance, "ingest_shards", list(SHARD_KEYS))
    fused = materialization(run_job(without_clip, instance, "fuse_shards", list(SHARD_KEYS)), FUSED_ATTRIBUTES)
    assert fused["policy_used"] is False and fused["probes_used"] is False
    reason = "the fusion policy was trained for CLIP model charattr-tiny/random, and this run uses no CLIP"
    assert fused["signals"]["policy"].startswith(f"not used: {reason}")
    assert "fusion_policy" not in fused["versions"] and "attribute_probes" not in fused["versions"]
    rows = list(Warehouse(root=str(tmp_path / "warehouse")).iter_rows(FUSED_ATTRIBUTES, list(SHARD_KEYS)))
    assert rows and all(r["strategy"] != "learned_policy" for r in rows)
    assert all(reason in r["notes"] for r in rows)

    report = materialization(run_job(without_clip, instance, "report"), "attribute_report")
    assert report["signals"] == [{"clip": "not used: " + "CLIP disabled by configuration (CHARATTR_USE_CLIP=0 or "
                                  "charattr run --no-clip)", "probes": report["signals"][0]["probes"],
                                  "policy": f"not used: {reason}; retrain it", "images": len(rows)}]
    assert "## Signals used" in report["report"] and reason in report["report"]
