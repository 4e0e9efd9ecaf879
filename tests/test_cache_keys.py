"""Cache and product keys say everything the result depends on (issue 9): the whole fusion policy
and the thresholds in the fused key, the tags beside the image in the keys of tag-dependent
results, and learned artefacts used only with the CLIP model and vocabulary they were made for."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from charattr_core.fusion import Thresholds
from charattr_core.pipeline import RunSummary, create_pipeline
from charattr_core.policy import FusionPolicy
from charattr_core.schema import load_vocabulary
from charattr_core.stages import STAGE_FUSED, STAGE_TAGS, fused_stage_version, fused_versions

VOCAB = load_vocabulary()


def _key(policy=None, thresholds=Thresholds(), strategy="confidence_weighted", model_key=None) -> str:
    return fused_stage_version(fused_versions(VOCAB, model_key, None, policy, strategy, thresholds))


def test_the_fused_key_covers_every_setting_of_the_policy_and_the_thresholds():
    base = FusionPolicy(VOCAB)
    variants = {
        "default strategy": FusionPolicy(VOCAB, default_strategy="tag_priority"),
        "exploration": FusionPolicy(VOCAB, exploration=0.5),
        "policy thresholds": FusionPolicy(VOCAB, thresholds=Thresholds(0.7, 0.3)),
        "actions": FusionPolicy(VOCAB, actions=("confidence_weighted", "tags_only")),
    }
    keys = {name: _key(p) for name, p in variants.items()}
    assert all(k != _key(base) for k in keys.values()), keys
    assert len(set(keys.values())) == len(keys)
    assert _key(FusionPolicy(VOCAB)) == _key(base)  # and nothing else: equal policies share their key
    assert _key(thresholds=Thresholds(0.7, 0.3)) != _key()
    assert _key(thresholds=Thresholds(0.8, 0.2)) != _key()
    assert _key(strategy="tag_priority") != _key()
    assert _key(model_key="charattr-tiny/random") != _key()


def test_the_fused_key_covers_the_model_a_policy_was_trained_for():
    trained_for_tiny = FusionPolicy(VOCAB, model_key="charattr-tiny/random")
    assert _key(trained_for_tiny) != _key(FusionPolicy(VOCAB))


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def _write(folder: Path, files: dict[str, bytes | str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def _run(config: dict, source: Path) -> tuple[dict[str, dict], RunSummary]:
    summary = RunSummary()
    with create_pipeline(config) as pipe:
        rows = {Path(f.source_uri).name: f.to_flat() for _r, f in pipe.iter_results(source, summary=summary)}
    return rows, summary


def test_two_policies_that_differ_only_in_their_default_strategy_give_different_cached_rows(tmp_path):
    source = _write(tmp_path / "src", {"a.png": _png("red"), "a.txt": "1girl, blonde_hair, long_hair"})
    config = {"use_clip": False, "database_url": f"sqlite:///{tmp_path / 'cache.db'}"}
    FusionPolicy(VOCAB, default_strategy="tags_only").save(tmp_path / "tags_policy")
    FusionPolicy(VOCAB, default_strategy="clip_only").save(tmp_path / "clip_policy")

    by_tags, first = _run({**config, "policy_path": str(tmp_path / "tags_policy")}, source)
    by_clip, second = _run({**config, "policy_path": str(tmp_path / "clip_policy")}, source)
    assert by_tags["a.png"]["hair_color"] == ["blonde"]
    assert by_clip["a.png"]["hair_color"] == ["unknown"]  # clip_only without CLIP: nothing to say
    assert second.stages[STAGE_FUSED].computed == 1 and second.stages[STAGE_FUSED].skipped == 0
    assert json.loads(by_tags["a.png"]["versions"]) != json.loads(by_clip["a.png"]["versions"])


def test_the_same_bytes_under_two_tag_sets_give_two_stable_answers_computed_once(tmp_path):
    picture = _png("blue")
    source = _write(tmp_path / "src", {"a.png": picture, "a.txt": "1girl, blonde_hair",
                                       "b.png": picture, "b.txt": "1girl, red_hair"})
    config = {"use_clip": False, "database_url": f"sqlite:///{tmp_path / 'cache.db'}"}
    first_rows, first = _run(config, source)
    assert first_rows["a.png"]["image_id"] == first_rows["b.png"]["image_id"]
    assert (first_rows["a.png"]["hair_color"], first_rows["b.png"]["hair_color"]) == (["blonde"], ["red"])
    assert first.stages[STAGE_FUSED].computed == 2

    for _again in range(2):  # order of the runs does not matter: each answer has its own key
        rows, summary = _run(config, source)
        assert (rows["a.png"]["hair_color"], rows["b.png"]["hair_color"]) == (["blonde"], ["red"])
        assert summary.stages[STAGE_FUSED].to_dict() == {"computed": 0, "skipped": 2, "failed": 0}


def test_tag_parses_are_cached_per_image_and_tags(tmp_path):
    """The tag stage on its own (what `charattr eval` and the Dagster tag_parses asset use)."""
    picture = _png("green")
    source = _write(tmp_path / "src", {"a.png": picture, "a.txt": "1girl, blonde_hair",
                                       "b.png": picture, "b.txt": "1girl, red_hair"})
    config = {"use_clip": False, "database_url": f"sqlite:///{tmp_path / 'cache.db'}"}
    for expected_computed in (2, 0):
        summary = RunSummary()
        with create_pipeline(config) as pipe:
            signals = [s for batch in pipe.iter_signals(source, summary=summary) for s in batch]
        hair = {Path(s.record.source_uri).name: s.tag_parse.estimates["hair_color"].values for s in signals}
        assert hair == {"a.png": ("blonde",), "b.png": ("red",)}
        assert summary.stages[STAGE_TAGS].computed == expected_computed


def test_a_policy_trained_for_another_model_is_not_applied_labelled_or_reported(tmp_path):
    source = _write(tmp_path / "src", {"a.png": _png("red"), "a.txt": "1girl, blonde_hair"})
    config = {"use_clip": False, "database_url": f"sqlite:///{tmp_path / 'cache.db'}",
              "policy_path": str(tmp_path / "policy")}
    FusionPolicy(VOCAB, default_strategy="clip_only", model_key="ViT-B-32/openai").save(tmp_path / "policy")

    rows, summary = _run(config, source)
    row = rows["a.png"]
    assert row["strategy"] == "confidence_weighted" and row["hair_color"] == ["blonde"]
    assert "fusion_policy" not in json.loads(row["versions"])
    assert "policy not used: the fusion policy was trained for CLIP model ViT-B-32/openai" in row["notes"]
    assert summary.signals["policy"].startswith("not used: the fusion policy was trained for CLIP model ViT-B-32")
    assert summary.signals["clip"].startswith("not used: CLIP disabled")
    assert summary.signals["tags"].startswith("used")

    # The same policy made for a run without CLIP is used, and says so.
    FusionPolicy(VOCAB, default_strategy="clip_only", model_key=None).save(tmp_path / "policy")
    rows, summary = _run(config, source)
    assert rows["a.png"]["strategy"] == "learned_policy" and rows["a.png"]["hair_color"] == ["unknown"]
    assert summary.signals["policy"].startswith("used: ")


def test_a_policy_saved_without_its_model_is_never_applied(tmp_path):
    source = _write(tmp_path / "src", {"a.png": _png("red"), "a.txt": "1girl, blonde_hair"})
    FusionPolicy(VOCAB, default_strategy="clip_only").save(tmp_path / "policy")
    meta_path = tmp_path / "policy" / "policy.json"
    meta = json.loads(meta_path.read_text())
    del meta["model_key"]  # as an older charattr wrote it
    meta_path.write_text(json.dumps(meta))
    rows, summary = _run({"use_clip": False, "cache_results": False, "policy_path": str(tmp_path / "policy")}, source)
    assert rows["a.png"]["strategy"] == "confidence_weighted"
    assert "older charattr" in summary.signals["policy"]


@pytest.mark.parametrize("use_clip", [False, True])
def test_probes_of_another_model_are_left_out_with_the_reason(tmp_path, use_clip):
    import numpy as np

    from charattr_core.probes import AttributeProbes, ProbeHead

    attr = VOCAB.attribute("hair_length")
    head = ProbeHead(attr.key, attr.multi, attr.value_names, np.zeros((64, len(attr.value_names))),
                     np.zeros(len(attr.value_names)))
    AttributeProbes("ViT-B-32/openai", VOCAB.fingerprint, 64, {attr.key: head}).save(tmp_path / "probes")
    source = _write(tmp_path / "src", {"a.png": _png("red"), "a.txt": "1girl, blonde_hair"})
    config = {"use_clip": use_clip, "model_name": "charattr-tiny", "pretrained": None, "cache_results": False,
              "probes_path": str(tmp_path / "probes")}
    rows, summary = _run(config, source)  # no error: the probes are simply not used
    versions = json.loads(rows["a.png"]["versions"])
    assert "attribute_probes" not in versions
    assert summary.signals["probes"].startswith("not used: ")
    if use_clip:
        assert "ViT-B-32/openai" in summary.signals["probes"] and "charattr-tiny/random" in summary.signals["probes"]
        assert summary.signals["clip"] == "used: charattr-tiny/random"
        assert versions["clip_embeddings"].endswith("charattr-tiny/random")
    else:
        assert "CLIP is not used" in summary.signals["probes"]
    assert "probes not used" in rows["a.png"]["notes"]
