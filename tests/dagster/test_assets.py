"""The asset graph on a test instance: loading, every asset materialized for a partition of
synthetic data, caching across runs, multi-partition runs, blocking checks and the offline path."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np

from charattr_core.clip import clip_model_key
from charattr_core.schema import load_vocabulary
from charattr_dagster.definitions import build_definitions
from charattr_dagster.asset_keys import ATTRIBUTE_PROBES, FUSED_ATTRIBUTES, FUSION_POLICY
from charattr_dagster.versions import code_versions
from charattr_dagster.warehouse import Warehouse

from dagster_testing import (IMAGES_PER_SHARD, SHARD_KEYS, check_evaluations, make_settings, materialization,
                             materialized_assets, partition_metadata, register, run_job)

ASSETS = ("raw_images", "tag_parses", "clip_embeddings", "attribute_probes", "fusion_policy", "fused_attributes",
          "attribute_report", "adapted_clip")
UPSTREAM = {
    "raw_images": set(),
    "tag_parses": {"raw_images"},
    "clip_embeddings": {"raw_images"},
    "attribute_probes": {"raw_images", "tag_parses", "clip_embeddings"},
    "fusion_policy": {"raw_images", "tag_parses", "clip_embeddings", "attribute_probes"},
    "fused_attributes": {"raw_images", "tag_parses", "clip_embeddings", "attribute_probes", "fusion_policy"},
    "attribute_report": {"fused_attributes", "fusion_policy"},
    "adapted_clip": {"raw_images", "tag_parses"},
}


def test_definitions_load_with_the_whole_graph(defs):
    dg.Definitions.validate_loadable(defs)
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert set(specs) == set(ASSETS)
    for name, spec in specs.items():
        assert {d.asset_key.to_user_string() for d in spec.deps} == UPSTREAM[name], name
        assert spec.group_name in {"ingest", "signals", "learning", "product"}
        assert spec.description and spec.code_version
    partitioned = {n for n, s in specs.items() if s.partitions_def is not None}
    assert partitioned == {"raw_images", "tag_parses", "clip_embeddings", "fused_attributes"}
    checks = {f"{c.asset_key.to_user_string()}.{c.name}": c
              for name in ASSETS for c in defs.resolve_assets_def(name).check_specs}
    assert checks["raw_images.failed_fraction"].blocking
    assert checks["clip_embeddings.embeddings_finite_and_normalised"].blocking
    assert not checks["clip_embeddings.model_available"].blocking
    assert {"tag_parses.values_in_vocabulary", "fused_attributes.confidence_in_range",
            "fused_attributes.attribute_coverage"} <= set(checks)
    assert defs.resolve_assets_def("clip_embeddings").op.pool == "gpu"


def test_code_versions_follow_the_model_and_the_vocabulary(settings, tmp_path):
    base = code_versions(settings)
    other_model = code_versions(settings.replace(model_name="RN50", pretrained=None))
    assert other_model.clip_embeddings != base.clip_embeddings
    assert other_model.fused_attributes != base.fused_attributes
    assert other_model.attribute_probes != base.attribute_probes
    assert (other_model.raw_images, other_model.tag_parses) == (base.raw_images, base.tag_parses)

    vocab_file = tmp_path / "attributes.toml"
    default = load_vocabulary()
    vocab_file.write_text(open(default.source, encoding="utf-8").read() + "\n[attributes.lighting]\n"
                          "[attributes.lighting.values.night]\ntags = ['night']\nprompts = ['a picture at night']\n",
                          encoding="utf-8")
    other_vocab = code_versions(settings.replace(vocabulary=str(vocab_file)))
    assert other_vocab.tag_parses != base.tag_parses
    assert other_vocab.fused_attributes != base.fused_attributes
    assert other_vocab.clip_embeddings == base.clip_embeddings


def test_every_asset_materializes_for_one_partition(defs, settings, instance):
    register(instance)
    shard = SHARD_KEYS[0]
    ingest = run_job(defs, instance, "ingest_shards", [shard])
    assert materialized_assets(ingest) == {"raw_images", "tag_parses", "clip_embeddings"}
    raw = materialization(ingest, "raw_images")
    assert raw["rows"] == IMAGES_PER_SHARD and raw["failed"] == 0 and raw["partitions_in_run"] == 1
    assert materialization(ingest, "tag_parses")["rows"] == IMAGES_PER_SHARD
    clip = materialization(ingest, "clip_embeddings")
    assert clip["clip_available"] is True and clip["model"] == clip_model_key("charattr-tiny", None)
    assert clip["embedding_dim"] == 64 and clip["images_per_second"] > 0
    checks = check_evaluations(ingest)
    assert {"raw_images.failed_fraction", "tag_parses.values_in_vocabulary", "tag_parses.confidence_in_range",
            "clip_embeddings.embeddings_finite_and_normalised", "clip_embeddings.model_available"} <= set(checks)
    assert all(e.passed for e in checks.values() if e.severity == dg.AssetCheckSeverity.ERROR)
    assert checks["clip_embeddings.model_available"].passed

    wh = Warehouse(root=settings.warehouse)
    vectors = [np.asarray(r["embedding"], dtype=np.float32) for r in wh.iter_rows("clip_embeddings", [shard])]
    assert len(vectors) == IMAGES_PER_SHARD
    assert all(abs(np.linalg.norm(v) - 1) < 1e-2 for v in vectors)

    train = run_job(defs, instance, "train_fusion")
    assert materialized_assets(train) == {ATTRIBUTE_PROBES, FUSION_POLICY}
    policy = materialization(train, FUSION_POLICY)
    assert policy["skipped"] is False and (wh.asset_dir(FUSION_POLICY) / "policy.json").is_file()
    assert (wh.asset_dir(ATTRIBUTE_PROBES) / "probes.json").is_file()

    fuse = run_job(defs, instance, "fuse_shards", [shard])
    fused = materialization(fuse, FUSED_ATTRIBUTES)
    assert fused["rows"] == IMAGES_PER_SHARD and fused["clip_used"] is True
    vocabulary = load_vocabulary()
    rows = list(wh.iter_rows(FUSED_ATTRIBUTES, [shard]))
    assert {r["image_id"] for r in rows} == {r["image_id"] for r in wh.iter_rows("raw_images", [shard])}
    for row in rows:
        for key in vocabulary.keys:
            assert set(row[key]) <= vocabulary.allowed_values(key)
            assert 0.0 <= row[f"{key}_confidence"] <= 1.0
    from charattr_core.store import ResultStore
    with ResultStore(settings.database_url) as store:
        assert store.count_fused(fused["stage_version"]) == IMAGES_PER_SHARD  # landed in the database too

    report = run_job(defs, instance, "report")
    meta = materialization(report, "attribute_report")
    assert meta["images"] == IMAGES_PER_SHARD
    assert "data:image/png;base64," in meta["report"]
    html = Path(settings.reports) / "attribute_report.html"
    assert html.is_file() and "<img src='data:image/png;base64," in html.read_text()
    assert "accuracy" in meta  # the demo source carries ground truth


def test_a_rerun_computes_nothing_new(defs, instance):
    register(instance)
    first = run_job(defs, instance, "process_shards", list(SHARD_KEYS))
    assert materialization(first, "tag_parses")["run_computed"] == 2 * IMAGES_PER_SHARD
    assert materialization(first, "fused_attributes")["database_rows_written"] == 2 * IMAGES_PER_SHARD
    again = run_job(defs, instance, "process_shards", list(SHARD_KEYS))
    for asset in ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes"):
        meta = materialization(again, asset)
        assert (meta["run_computed"], meta["run_skipped"]) == (0, 2 * IMAGES_PER_SHARD), asset
        for shard, own in partition_metadata(again, asset).items():
            assert (own["computed"], own["skipped"]) == (0, IMAGES_PER_SHARD), (asset, shard)
    assert materialization(again, "fused_attributes")["database_rows_written"] == 0  # nor rewrites the table


def test_one_run_covers_several_partitions(defs, settings, instance):
    register(instance)
    result = run_job(defs, instance, "process_shards", list(SHARD_KEYS))
    assert result.success
    assert result.dagster_run.tags["dagster/asset_partition_range_start"] == SHARD_KEYS[0]
    for asset in ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(SHARD_KEYS)
    meta = materialization(result, "raw_images")
    assert meta["partitions_in_run"] == 2 and meta["run_rows"] == 2 * IMAGES_PER_SHARD
    assert {r.data["shard"] for r in meta["run_per_shard"].records} == set(SHARD_KEYS)
    wh = Warehouse(root=settings.warehouse)
    assert wh.partitions("fused_attributes") == list(SHARD_KEYS)


def test_a_failed_blocking_check_stops_downstream_assets(demo_source, tmp_path, instance):
    victim = sorted((demo_source / SHARD_KEYS[0]).glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    defs = build_definitions(make_settings(demo_source, tmp_path, max_failed_fraction=0.0))
    register(instance)
    result = run_job(defs, instance, "ingest_shards", [SHARD_KEYS[0]], raise_on_error=False)
    assert materialized_assets(result) == {"raw_images"}
    check = check_evaluations(result)["raw_images.failed_fraction"]
    assert not check.passed
    failed_rows = check.metadata["failed_rows"].value.records
    assert [r.data["source_uri"] for r in failed_rows] == [str(victim)]
    assert failed_rows[0].data["error"]  # the reason is there, in words
    assert instance.get_materialized_partitions(dg.AssetKey("tag_parses")) == set()


def test_without_clip_weights_fusion_still_runs_on_the_remaining_signals(demo_source, tmp_path, instance, monkeypatch):
    import charattr_core.clip_loading as clip_loading

    monkeypatch.setattr(clip_loading, "_find_in_hf_cache", lambda *_args, **_kw: None)  # nothing cached
    monkeypatch.delenv(clip_loading.ALLOW_DOWNLOAD_ENV, raising=False)
    defs = build_definitions(make_settings(demo_source, tmp_path, model_name="ViT-B-32", pretrained="openai"))
    register(instance)
    shard = SHARD_KEYS[0]

    ingest = run_job(defs, instance, "ingest_shards", [shard])
    clip = materialization(ingest, "clip_embeddings")
    assert clip["clip_available"] is False and "not in the local cache" in clip["clip_unavailable_reason"]
    warn = check_evaluations(ingest)["clip_embeddings.model_available"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert materialization(ingest, "tag_parses")["rows"] == IMAGES_PER_SHARD

    train = run_job(defs, instance, "train_fusion")
    for asset in (ATTRIBUTE_PROBES, FUSION_POLICY):
        meta = materialization(train, asset)
        assert meta["skipped"] is True and "CLIP is unavailable" in meta["skip_reason"]

    fuse = run_job(defs, instance, "fuse_shards", [shard])
    fused = materialization(fuse, FUSED_ATTRIBUTES)
    assert fused["rows"] == IMAGES_PER_SHARD and fused["clip_used"] is False
    rows = list(Warehouse(root=str(tmp_path / "warehouse")).iter_rows(FUSED_ATTRIBUTES, [shard]))
    assert all("clip unavailable" in r["notes"] for r in rows)
    assert all("clip" not in json.loads(r["evidence"]).get("gender", []) for r in rows)


def test_the_policy_learns_online_from_new_shards_only(defs, instance):
    register(instance, SHARD_KEYS[:1])
    run_job(defs, instance, "ingest_shards", SHARD_KEYS[:1])
    first = materialization(run_job(defs, instance, "train_fusion"), FUSION_POLICY)
    assert (first["warm_start"], first["new_shards"]) == (False, 1)

    register(instance, SHARD_KEYS[1:])
    run_job(defs, instance, "ingest_shards", list(SHARD_KEYS))  # shard_000 rewritten from the cache, same bytes
    second = materialization(run_job(defs, instance, "train_fusion"), FUSION_POLICY)
    assert (second["warm_start"], second["shards"], second["new_shards"]) == (True, 2, 1)

    third = materialization(run_job(defs, instance, "train_fusion"), FUSION_POLICY)
    assert (third["warm_start"], third["new_shards"]) == (True, 0)
    assert third["version"] == second["version"]  # nothing new learnt: the same policy, the same fused cache keys


def test_a_refused_policy_is_not_published_and_its_check_fails(defs, settings, instance, monkeypatch):
    import charattr_core.learning as learning
    import charattr_core.policy_gate as policy_gate

    register(instance, SHARD_KEYS[:1])
    run_job(defs, instance, "ingest_shards", SHARD_KEYS[:1])
    first = run_job(defs, instance, "train_fusion")
    gate = check_evaluations(first)["fusion_policy.not_worse_than_current_and_simple_average"]
    assert gate.passed and materialization(first, FUSION_POLICY)["published"] is True
    assert gate.metadata["comparison"].value.records[0].data["candidate_minus"] == "simple_average"
    folder = Warehouse(root=settings.warehouse).asset_dir(FUSION_POLICY)
    published = (folder / "policy.json").read_bytes()

    # The judgement itself is tested in tests/test_policy_gate.py; here, what the asset does with a refusal.
    refusal = policy_gate.PolicyVerdict(False, "learned_policy trails simple_average (test)", ())
    monkeypatch.setattr(learning, "judge_candidate", lambda report, has_current: refusal)
    register(instance, SHARD_KEYS[1:])
    run_job(defs, instance, "ingest_shards", SHARD_KEYS[1:])
    second = run_job(defs, instance, "train_fusion", raise_on_error=False)
    assert not second.success  # a failed blocking check fails the step: nothing downstream runs on it
    gate = check_evaluations(second)["fusion_policy.not_worse_than_current_and_simple_average"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    meta = materialization(second, FUSION_POLICY)
    assert meta["published"] is False and meta["in_use"] == materialization(first, FUSION_POLICY)["version"]
    assert (folder / "policy.json").read_bytes() == published  # fused_attributes still loads the old one
    assert (folder / "rejected" / "policy.json").is_file() and (folder / "rejected" / "evaluation.md").is_file()
