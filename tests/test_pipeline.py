"""The in-process pipeline (`create_pipeline`): the seed's API, caching, failures, offline CLIP."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from charattr_core.errors import ConfigError
from charattr_core.pipeline import RunSummary, create_pipeline
from charattr_core.synthetic import TagNoise, load_ground_truth, write_demo_dataset

SEED_KEYS = {"Age", "Gender", "Skin Tone", "Hair Style", "Hair Color", "Hair Length", "Eye Color",
             "Body Type", "Dress", "Facial Expression", "Accessories", "Confidence Score"}


def test_unknown_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown setting"):
        create_pipeline({"confidance_threshold": 0.8})


def test_extract_from_pil_image_uses_the_tags(tmp_path):
    with create_pipeline({"use_clip": False, "cache_results": False}) as pipe:
        result = pipe.extract_from_image(Image.new("RGB", (64, 64), "white"),
                                         tags="1girl, blonde hair, very long hair, twintails, red eyes")
    seed = result.to_dict(pipe.vocabulary)
    assert set(seed) == SEED_KEYS
    assert seed["Hair Color"] == ["blonde"] and seed["Hair Length"] == "very long"
    assert seed["Eye Color"] == ["red"] and "twintails" in seed["Hair Style"]
    assert result.attributes["hair_color"].confidence >= 0.8
    assert "blonde_hair" in result.attributes["hair_color"].evidence
    flat = result.to_flat()
    assert flat["hair_color"] == ["blonde"] and 0.8 <= flat["hair_color_confidence"] <= 1.0


def test_multi_character_post_is_not_a_confident_single_answer():
    with create_pipeline({"use_clip": False, "cache_results": False}) as pipe:
        result = pipe.extract_from_image(Image.new("RGB", (32, 32)), tags="1boy 1girl blonde_hair black_hair")
    assert result.attributes["gender"].values == ("mixed",)  # a couple: neither male nor female
    assert result.attributes["hair_color"].confidence < 0.8


def test_batch_with_tiny_clip_and_cache_rerun_computes_nothing(demo_source, tiny_config):
    first, second = RunSummary(), RunSummary()
    with create_pipeline(tiny_config) as pipe:
        rows = [f for _r, f in pipe.iter_results(demo_source, summary=first)]
    assert first.images == 24 and first.failed == 0 and all(rows)
    assert first.stages["clip_embeddings"].computed == 24
    assert first.stages["fused_attributes"].computed == 24
    with create_pipeline(tiny_config) as pipe:
        again = [f for _r, f in pipe.iter_results(demo_source, summary=second)]
    assert second.stages["fused_attributes"].computed == 0 and second.stages["fused_attributes"].skipped == 24
    assert second.stages["clip_embeddings"].computed == 0 and second.stages["tag_parses"].computed == 0
    assert [f.to_flat() for f in again] == [f.to_flat() for f in rows]


def test_process_batch_limit_and_moved_files_hit_the_cache(demo_source, tiny_config, tmp_path):
    with create_pipeline(tiny_config) as pipe:
        assert len(pipe.process_batch(demo_source, limit=5)) == 5
    moved = tmp_path / "moved"
    shutil.copytree(demo_source, moved)
    summary = RunSummary()
    with create_pipeline(tiny_config) as pipe:
        results = [f for _r, f in pipe.iter_results(moved, limit=5, summary=summary)]
    assert summary.stages["fused_attributes"].skipped == 5  # same bytes, new paths: same image_id
    assert all(str(moved) in f.source_uri for f in results)


def test_edited_tags_are_parsed_again_and_the_same_bytes_keep_their_embedding(tmp_path, tiny_config):
    src = tmp_path / "src"
    write_demo_dataset(src, n_images=2, n_shards=1, seed=2, size=64)
    with create_pipeline(tiny_config) as pipe:
        pipe.process_batch(src)
    sidecar = sorted((src / "shard_000").glob("*.txt"))[0]
    sidecar.write_text("1girl, green_hair, short_hair")
    summary = RunSummary()
    with create_pipeline(tiny_config) as pipe:
        results = {Path(f.source_uri).stem: f for _r, f in pipe.iter_results(src, summary=summary)}
    stages = summary.stages
    assert (stages["fused_attributes"].computed, stages["fused_attributes"].skipped) == (1, 1)
    assert (stages["tag_parses"].computed, stages["clip_embeddings"].skipped) == (1, 1)
    assert results[sidecar.stem].attributes["hair_color"].values == ("green",)


def test_corrupt_image_becomes_a_failed_row_and_the_batch_completes(tmp_path, tiny_config):
    src = tmp_path / "src"
    write_demo_dataset(src, n_images=4, n_shards=1, seed=1, size=96)
    png = sorted((src / "shard_000").glob("*.png"))[0]
    png.write_bytes(png.read_bytes()[:200])  # truncated
    (src / "shard_000" / "notes.jpg").write_text("<html>404 Not Found</html>")
    summary = RunSummary()
    with create_pipeline(tiny_config) as pipe:
        pairs = list(pipe.iter_results(src, summary=summary))
    failed = [r for r, f in pairs if f is None]
    assert summary.images == 5 and summary.failed == 2 and len(failed) == 2
    assert all(r.status == "failed" and r.error for r in failed)
    assert len([f for _r, f in pairs if f is not None]) == 3


def test_clip_unavailable_falls_back_to_tags_and_says_why(demo_source, tmp_path):
    cfg = {"model_name": "ViT-B-32", "pretrained": "openai", "allow_download": False,
           "database_url": f"sqlite:///{tmp_path / 'c.db'}"}
    with create_pipeline(cfg) as pipe:
        results = pipe.process_batch(demo_source, limit=4)
        assert pipe.clip is None and "openai" in pipe.clip_unavailable
    assert len(results) == 4
    assert all(any("clip unavailable" in n for n in r.notes) for r in results)
    assert all("clip" not in e.evidence for r in results for e in r.attributes.values())


def test_tags_only_fusion_recovers_clean_synthetic_truth(tmp_path):
    """With noise-free tags, every drawn single-valued attribute comes back exactly."""
    src = tmp_path / "clean"
    write_demo_dataset(src, n_images=30, n_shards=1, seed=3, size=64,
                       noise=TagNoise(missing=0, wrong=0, alias=0.3, extra=0.2, no_tags=0))
    truth = load_ground_truth(src)
    with create_pipeline({"use_clip": False, "cache_results": False}) as pipe:
        results = pipe.process_batch(src)
    checked = 0
    for r in results:
        for attr in ("hair_length", "expression", "skin_tone"):
            expected = truth[r.image_id].get(attr)
            if expected:
                checked += 1
                assert list(r.attributes[attr].values) == expected, (r.image_id, attr)
    assert checked >= 60
