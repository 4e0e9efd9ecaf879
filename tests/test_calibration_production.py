"""Calibrated confidence in production (issue 14): the published policy carries its calibration,
its fingerprint (the fused key) covers it, and `charattr run`/`batch` and the Dagster product map
fused and per-source confidences with it — confidences only, never answers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charattr_core.calibration import POOLED, RAW_CONFIDENCE, ConfidenceCalibration
from charattr_core.config import ALL_STRATEGIES
from charattr_core.errors import ConfigError
from charattr_core.evaluation import RAW_ECE, EvalExample
from charattr_core.fusion import LEARNED_POLICY, FusionContext, Thresholds, fuse
from charattr_core.learning import Signals, train_and_judge_policy
from charattr_core.pipeline import RunSummary, create_pipeline
from charattr_core.policy import FusionPolicy
from charattr_core.records import AttributeEstimate, ImageRecord, TagParse
from charattr_core.schema import load_vocabulary
from charattr_core.splits import split_of
from charattr_core.stages import fuse_batch, fused_stage_version, fused_versions

VOCAB = load_vocabulary()
HAIR = VOCAB.attribute("hair_length")
TO_60 = (np.array([0.5, 0.9]), np.array([0.3, 0.6]))  # 0.9 -> 0.6 (and 0.5 -> 0.3)


def calibration(*methods: str, knots=TO_60) -> ConfidenceCalibration:
    return ConfidenceCalibration({(m, POOLED): knots for m in methods})


def tags(value: str, confidence: float, tag: str = "long_hair") -> dict[str, AttributeEstimate]:
    return {"hair_length": AttributeEstimate("hair_length", (value,), confidence, (tag,), {value: confidence})}


def trained_policy(seed: int = 0) -> FusionPolicy:
    """A policy with some statistics (the calibration tests need more than an empty one)."""
    rng = np.random.default_rng(seed)
    policy = FusionPolicy(VOCAB)
    examples = []
    for i in range(30):
        truth = "long" if rng.random() < 0.5 else "short"
        seen = truth if rng.random() < 0.7 else ("short" if truth == "long" else "long")
        examples.append(EvalExample(f"p{i}", {"tags": tags(seen, float(rng.uniform(0.3, 1.0)))}, FusionContext(),
                                    {"hair_length": (truth,)}))
    policy.update(examples)
    return policy


# ---- persisted with the policy, and part of its identity ----------------------------------------------

def test_a_policy_keeps_its_calibration_through_save_and_load(tmp_path):
    policy = trained_policy()
    policy.calibration = calibration("tags", LEARNED_POLICY)
    policy.save(tmp_path / "policy")
    loaded = FusionPolicy.load(tmp_path / "policy", VOCAB)
    assert loaded.calibration is not None and loaded.calibration.methods == ("learned_policy", "tags")
    for c in (0.2, 0.7, 0.9, 0.99):
        assert loaded.calibration.calibrate(LEARNED_POLICY, "hair_length", c) == \
            pytest.approx(policy.calibration.calibrate(LEARNED_POLICY, "hair_length", c))
    assert loaded.calibration.calibrate("tags", "hair_length", 0.9) == pytest.approx(0.6)
    assert (loaded.fingerprint, loaded.version) == (policy.fingerprint, policy.version)
    assert loaded.calibration_state().startswith("calibrated: isotonic maps of learned_policy, tags")


def test_a_changed_calibration_changes_the_policy_fingerprint_and_the_fused_key():
    def key(p):
        return fused_stage_version(fused_versions(VOCAB, None, None, p, "confidence_weighted", Thresholds()))

    plain = trained_policy()
    to_60 = trained_policy()
    to_60.calibration = calibration(LEARNED_POLICY)
    to_70 = trained_policy()
    to_70.calibration = calibration(LEARNED_POLICY, knots=(np.array([0.5, 0.9]), np.array([0.3, 0.7])))
    fingerprints = {p.fingerprint for p in (plain, to_60, to_70)}
    assert len(fingerprints) == 3, "a policy whose calibration differs must not share its fingerprint"
    assert len({key(p) for p in (plain, to_60, to_70)}) == 3, "cached fused rows of another calibration reused"
    same = trained_policy()
    same.calibration = calibration(LEARNED_POLICY)
    assert same.fingerprint == to_60.fingerprint  # and nothing else: equal calibrations share it


def test_an_edited_calibration_in_policy_json_is_refused(tmp_path):
    policy = trained_policy()
    policy.calibration = calibration(LEARNED_POLICY)
    meta_path = policy.save(tmp_path / "policy")
    meta = json.loads(meta_path.read_text())
    meta["calibration"]["maps"][0]["calibrated"] = [0.3, 0.95]  # someone makes the policy look surer
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="does not match its recorded hash"):
        FusionPolicy.load(tmp_path / "policy", VOCAB)
    meta["calibration"]["maps"][0]["confidence"] = [0.9, 0.5]  # knots out of order
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="malformed"):
        FusionPolicy.load(tmp_path / "policy", VOCAB)


def test_new_statistics_drop_the_calibration_fitted_for_the_old_ones():
    policy = trained_policy()
    policy.calibration = calibration(LEARNED_POLICY)
    policy.update([EvalExample("x", {"tags": tags("long", 0.9)}, FusionContext(), {"hair_length": ("long",)})])
    assert policy.calibration is None
    policy.calibration = calibration(LEARNED_POLICY)
    policy.observe("hair_length", np.ones(13), "tags_only", 1.0)
    assert policy.calibration is None


# ---- applied by production fusion ---------------------------------------------------------------------

def _record(image_id: str) -> ImageRecord:
    return ImageRecord(image_id=image_id, source_uri=f"/data/{image_id}.png", shard="s", width=64, height=64)


def test_production_fusion_maps_the_fused_and_the_source_confidence_and_keeps_the_raw_one():
    policy = FusionPolicy(VOCAB, default_strategy="tags_only")  # untrained: takes the tags everywhere
    policy.calibration = calibration("tags", LEARNED_POLICY)
    record = _record("img")
    parse = TagParse("img", tags("long", 0.9), tag_count=3)
    common = dict(vocabulary=VOCAB, zero_shot_scorer=None, probes=None, strategy="confidence_weighted",
                  thresholds=Thresholds(), versions={})
    raw_policy = FusionPolicy(VOCAB, default_strategy="tags_only")
    [row] = fuse_batch([record], {record.source_uri: parse}, {}, policy=policy, **common)
    [raw] = fuse_batch([record], {record.source_uri: parse}, {}, policy=raw_policy, **common)

    hair = row.attributes["hair_length"]
    assert hair.values == ("long",) and hair.confidence == pytest.approx(0.6)
    assert f"{RAW_CONFIDENCE}:0.9000" in hair.evidence
    assert "confidence:tags=0.6000,raw=0.9000" in hair.evidence
    assert raw.attributes["hair_length"].confidence == pytest.approx(0.9)
    assert not any(e.startswith((RAW_CONFIDENCE, "confidence:")) for e in raw.attributes["hair_length"].evidence)
    assert row.confidence == pytest.approx(0.6)  # the row's confidence: the mean of the calibrated answers
    assert row.to_flat()["hair_length_confidence"] == 0.6


def test_a_fixed_strategy_is_mapped_by_its_own_map():
    cal = ConfidenceCalibration({("tag_priority", POOLED): TO_60,
                                 (LEARNED_POLICY, POOLED): (np.array([0.0, 1.0]), np.array([0.1, 0.1]))})
    row = fuse("img", {"tags": tags("long", 0.9)}, VOCAB, strategy="tag_priority", calibration=cal)
    assert row.attributes["hair_length"].confidence == pytest.approx(0.6)


def _random_sources(rng) -> dict[str, dict[str, AttributeEstimate]]:
    out = {}
    for source in ("tags", "clip", "probe"):
        if rng.random() < 0.2:
            continue
        estimates = {}
        for attribute in VOCAB.attributes:
            names = attribute.value_names
            k = 2 if attribute.multi and rng.random() < 0.5 else 1
            values = tuple(rng.choice(names, size=k, replace=False))
            conf = float(rng.uniform(0.05, 1.0))
            estimates[attribute.key] = AttributeEstimate(attribute.key, values, conf, (f"{source}_evidence",),
                                                         {v: conf for v in values})
        out[source] = estimates
    return out


def test_calibration_changes_confidences_only_never_answers():
    rng = np.random.default_rng(7)
    harsh = (np.array([0.0, 1.0]), np.array([0.01, 0.05]))  # far below `low`: still the same answers
    cal = ConfidenceCalibration({(m, POOLED): harsh for m in ("tags", "clip", "probe", LEARNED_POLICY, *ALL_STRATEGIES)})
    policy = trained_policy(seed=3)
    changed = 0
    for i in range(40):
        sources = _random_sources(rng)
        for strategy, chooser in [(s, None) for s in ALL_STRATEGIES] + [("confidence_weighted", policy)]:
            plain = fuse(f"i{i}", sources, VOCAB, strategy=strategy, policy=chooser)
            mapped = fuse(f"i{i}", sources, VOCAB, strategy=strategy, policy=chooser, calibration=cal)
            assert mapped.strategies == plain.strategies
            for key, est in plain.attributes.items():
                assert mapped.attributes[key].values == est.values
                assert mapped.attributes[key].scores == est.scores
                if not est.is_unknown:
                    changed += mapped.attributes[key].confidence < est.confidence
    assert changed > 100


# ---- an old policy (no calibration), through `charattr run`/`batch`'s pipeline ----------------------------

def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def _run(policy_dir: Path, source: Path) -> tuple[dict, RunSummary]:
    summary = RunSummary()
    with create_pipeline({"use_clip": False, "cache_results": False, "policy_path": str(policy_dir)}) as pipe:
        rows = {Path(r.source_uri).name: f for r, f in pipe.iter_results(source, summary=summary)}
    return rows, summary


def test_an_old_policy_without_calibration_loads_and_fuses_as_before_and_says_uncalibrated(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.png").write_bytes(_png("red"))
    (source / "a.txt").write_text("1girl, blonde_hair, long_hair")
    policy = trained_policy()
    policy.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "policy.json"
    meta = json.loads(meta_path.read_text())
    del meta["calibration"]  # as charattr wrote it before policies carried a calibration
    meta_path.write_text(json.dumps(meta))

    old = FusionPolicy.load(tmp_path / "old", VOCAB)
    assert old.calibration is None and old.fingerprint == policy.fingerprint
    rows, summary = _run(tmp_path / "old", source)
    row = rows["a.png"]
    assert row.strategy == LEARNED_POLICY and row.attributes["hair_length"].values == ("long",)
    assert summary.signals["calibration"].startswith("uncalibrated: fusion policy")
    assert not any(e.startswith(RAW_CONFIDENCE) for est in row.attributes.values() for e in est.evidence)

    policy.calibration = calibration("tags", LEARNED_POLICY)
    policy.save(tmp_path / "calibrated")
    calibrated, summary = _run(tmp_path / "calibrated", source)
    assert summary.signals["calibration"].startswith("calibrated: isotonic maps")
    for key, est in row.attributes.items():
        mapped = calibrated["a.png"].attributes[key]
        assert mapped.values == est.values
        if not est.is_unknown:
            assert mapped.confidence == pytest.approx(policy.calibration.calibrate(LEARNED_POLICY, key, est.confidence))
            assert f"{RAW_CONFIDENCE}:{est.confidence:.4f}" in mapped.evidence


def test_without_a_policy_the_summary_says_confidences_are_uncalibrated(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.png").write_bytes(_png("red"))
    summary = RunSummary()
    with create_pipeline({"use_clip": False, "cache_results": False}) as pipe:
        list(pipe.iter_results(source, summary=summary))
    assert summary.signals["calibration"] == "uncalibrated: no fusion policy in use, so confidences are raw"


# ---- fitted when the policy is trained --------------------------------------------------------------------

def _ids(split: str, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        if split_of(f"img-{i}") == split:
            out.append(f"img-{i}")
        i += 1
    return out


def _overconfident_signals(seed: int) -> tuple[list[list[Signals]], dict]:
    """Tags that say 0.9 for hair length and are right 60 % of the time, on images of every policy split."""
    rng = np.random.default_rng(seed)
    signals, truth = [], {}
    for split, n in (("probe_calibration", 300), ("policy_train", 150), ("holdout", 300)):
        for image_id in _ids(split, n):
            right = rng.random() < 0.6
            truth[image_id] = {"hair_length": ("long",)}
            parse = TagParse(image_id, tags("long" if right else "short", 0.9), tag_count=5)
            signals.append(Signals(_record(image_id), parse, None))
    return [signals[i:i + 64] for i in range(0, len(signals), 64)], truth


def test_training_the_policy_fits_its_calibration_and_reports_calibrated_ece_beside_raw():
    batches, truth = _overconfident_signals(seed=0)

    def source(keep):
        return ([s for s in batch if keep(s.record.image_id)] for batch in batches)

    def new_parts(keep):  # a warm start's training source: new parts only, here without calibration images
        return ([s for s in batch if keep(s.record.image_id) and split_of(s.record.image_id) == "policy_train"]
                for batch in batches)

    outcome = train_and_judge_policy(new_parts, source, VOCAB, model_key=None, scorer=None, probes=None,
                                     user_labels=truth, thresholds=Thresholds(), default_strategy="confidence_weighted",
                                     n_bootstrap=50)
    cal = outcome.candidate.calibration
    assert cal is not None and cal.methods == ("learned_policy", "tags")  # only what production fusion applies
    assert cal.calibrate("tags", "hair_length", 0.9) == pytest.approx(0.6, abs=0.08)
    report = outcome.report
    assert report.calibrated
    raw, calibrated = report.metric(LEARNED_POLICY, metric=RAW_ECE).value, report.metric(LEARNED_POLICY, metric="ece").value
    assert raw > 0.2 and calibrated < 0.08 and calibrated < raw
    assert "ECE before calibration" in report.to_markdown()

    # Self-supervision hides the labelled attribute's tags, so there is nothing to calibrate them on.
    unlabelled = train_and_judge_policy(source, source, VOCAB, model_key=None, scorer=None, probes=None, user_labels={},
                                        thresholds=Thresholds(), default_strategy="confidence_weighted", n_bootstrap=20)
    assert unlabelled.candidate.calibration is None
    assert unlabelled.candidate.calibration_state().startswith("uncalibrated")
