"""Fusion strategies on hand-built source estimates: each rule decides where it should."""

from __future__ import annotations

import math

import numpy as np
import pytest

from charattr_core.config import ALL_STRATEGIES
from charattr_core.errors import ConfigError
from charattr_core.fusion import (LEARNED_POLICY, STRATEGIES, FusionContext, Thresholds, agreement_confidence,
                                  disagreement_confidence, fuse, fuse_attribute)
from charattr_core.records import AttributeEstimate, TagParse
from charattr_core.schema import UNKNOWN, load_vocabulary

VOCAB = load_vocabulary()
HAIR_LENGTH = VOCAB.attribute("hair_length")  # single-valued, 6 values
HAIR_COLOR = VOCAB.attribute("hair_color")  # multi-valued
TH = Thresholds(accept=0.8, low=0.3)
SEED_KEYS = {"Age", "Gender", "Skin Tone", "Hair Style", "Hair Color", "Hair Length", "Eye Color", "Body Type",
             "Dress", "Facial Expression", "Accessories", "Confidence Score"}


def est(attr: str, values, confidence: float, scores=None, evidence=()) -> AttributeEstimate:
    values = (values,) if isinstance(values, str) else tuple(values)
    return AttributeEstimate(attr, values, confidence, tuple(evidence), dict(scores or {}))


def length(tags=None, probe=None, clip=None, strategy="confidence_weighted") -> AttributeEstimate:
    sources = {k: v for k, v in {"tags": tags, "probe": probe, "clip": clip}.items() if v is not None}
    return fuse_attribute(HAIR_LENGTH, sources, strategy, TH)


def test_registry_covers_every_configured_strategy():
    assert set(ALL_STRATEGIES) <= set(STRATEGIES)


def test_conservative_needs_accept_but_aggressive_takes_low_visual():
    tags, probe = est("hair_length", "short", 0.5), est("hair_length", "long", 0.6)
    assert length(tags, probe, strategy="conservative_clip").values == ("short",)
    assert length(tags, probe, strategy="aggressive_clip").values == ("long",)
    confident_probe = est("hair_length", "long", 0.9)
    assert length(tags, confident_probe, strategy="conservative_clip").values == ("long",)
    # Below `low` even the aggressive strategy does not trust the visual answer.
    assert length(tags, est("hair_length", "long", 0.2), strategy="aggressive_clip").values == ("short",)


def test_tag_and_visual_priority_take_their_channel_when_confident():
    tags, probe = est("hair_length", "short", 0.9), est("hair_length", "long", 0.9)
    assert length(tags, probe, strategy="tag_priority").values == ("short",)
    assert length(tags, probe, strategy="visual_priority").values == ("long",)


def test_cross_check_agreement_raises_confidence_by_the_documented_posterior():
    tags, probe = est("hair_length", "short", 0.6, evidence=("short_hair",)), est("hair_length", "short", 0.5)
    fused = length(tags, probe, strategy="tag_priority")
    q = 1 / (len(HAIR_LENGTH.values) - 1)
    expected = 0.6 * 0.5 / (0.6 * 0.5 + 0.4 * 0.5 * q)
    assert fused.values == ("short",)
    assert fused.confidence == pytest.approx(expected)
    assert fused.confidence > 0.6
    assert fused.evidence[:3] == ("tags", "probe", "short_hair")


def test_cross_check_disagreement_lets_the_more_confident_win_with_less_confidence():
    tags, probe = est("hair_length", "short", 0.45), est("hair_length", "long", 0.7)
    fused = length(tags, probe, strategy="tag_priority")
    assert fused.values == ("long",)
    assert fused.confidence == pytest.approx(disagreement_confidence(0.7, 0.45, 0.2))
    assert fused.confidence < 0.7
    assert "conflict:tags" in fused.evidence


def test_priority_falls_back_below_low():
    tags, probe = est("hair_length", "short", 0.1), est("hair_length", "long", 0.5)
    assert length(tags, probe, strategy="tag_priority").values == ("long",)
    assert length(tags, None, strategy="tag_priority").is_unknown


def test_uncertainty_aware_abstains_on_disagreement_and_rewards_agreement():
    disagree = length(est("hair_length", "short", 0.6), est("hair_length", "long", 0.7), strategy="uncertainty_aware")
    assert disagree.is_unknown
    assert "abstain:disagreement" in disagree.evidence
    agree = length(est("hair_length", "short", 0.6), est("hair_length", "short", 0.6), strategy="uncertainty_aware")
    assert agree.values == ("short",)
    assert agree.confidence > 0.6
    # One source at or above accept overrides the other, at reduced confidence.
    strong = length(est("hair_length", "short", 0.9), est("hair_length", "long", 0.5), strategy="uncertainty_aware")
    assert strong.values == ("short",)
    assert 0.3 <= strong.confidence < 0.9


def test_confidence_weighted_follows_the_confident_source_where_simple_average_does_not():
    tags = est("hair_length", "short", 0.95, {"short": 0.6, "long": 0.4})
    probe = est("hair_length", "long", 0.1, {"short": 0.1, "long": 0.9})
    weighted = length(tags, probe, strategy="confidence_weighted")
    average = length(tags, probe, strategy="simple_average")
    assert weighted.scores["short"] == pytest.approx((0.95 * 0.6 + 0.1 * 0.1) / 1.05)
    assert weighted.values == ("short",)
    assert average.scores["long"] == pytest.approx(0.65)
    assert average.values == ("long",)
    assert sum(weighted.scores.values()) == pytest.approx(1.0)


def test_pooled_answer_below_low_becomes_unknown():
    flat = {v: 1 / 6 for v in HAIR_LENGTH.value_names}
    fused = length(est("hair_length", "short", 0.2, flat), est("hair_length", "long", 0.2, flat))
    assert fused.is_unknown
    assert fused.confidence == 0.0


def test_visual_is_the_probe_when_present_else_zero_shot_clip():
    probe, clip = est("hair_length", "long", 0.9), est("hair_length", "short", 0.95)
    assert length(probe=probe, clip=clip, strategy="clip_only").values == ("long",)
    assert length(clip=clip, strategy="clip_only").values == ("short",)
    assert length(tags=est("hair_length", "bob", 0.9), strategy="tags_only").is_unknown  # not a vocabulary value


def test_missing_sources_and_all_unknown_give_unknown_everywhere():
    for strategy in STRATEGIES:
        assert length(strategy=strategy).is_unknown
        assert length(est("hair_length", UNKNOWN, 0.0), clip=est("hair_length", UNKNOWN, 0.0),
                      strategy=strategy).is_unknown
    row = fuse("img", {}, VOCAB, strategy="uncertainty_aware")
    assert set(row.attributes) == set(VOCAB.keys)
    assert all(e.is_unknown for e in row.attributes.values())
    assert row.confidence == 0.0


def test_multi_valued_pooling_names_every_value_above_one_half():
    tags = est("hair_color", ("black", "red"), 0.85, {"black": 0.9, "red": 0.85})
    clip = est("hair_color", ("black", "blonde"), 0.6, {"black": 0.7, "red": 0.2, "blonde": 0.6})
    fused = fuse_attribute(HAIR_COLOR, {"tags": tags, "clip": clip}, "simple_average", TH)
    # black (0.9+0.7)/2 = 0.8, red (0.85+0.2)/2 = 0.525, blonde 0.3: two values named.
    assert fused.values == ("black", "red")
    assert fused.confidence == pytest.approx(0.525)
    assert fused.scores["blonde"] == pytest.approx(0.3)


def test_multi_valued_agreement_means_the_same_set():
    same = fuse_attribute(HAIR_COLOR, {"tags": est("hair_color", ("red", "black"), 0.6),
                                       "probe": est("hair_color", ("black", "red"), 0.5)}, "tag_priority", TH)
    assert same.values == ("black", "red")  # vocabulary order
    assert same.confidence > 0.6
    differ = fuse_attribute(HAIR_COLOR, {"tags": est("hair_color", ("red", "black"), 0.6),
                                         "probe": est("hair_color", ("black",), 0.5)}, "uncertainty_aware", TH)
    assert differ.is_unknown


def test_random_inputs_always_give_vocabulary_values_and_unit_confidences():
    rng = np.random.default_rng(7)
    for _ in range(60):
        sources = {}
        for source in ("tags", "clip", "probe"):
            if rng.random() < 0.25:
                continue
            estimates = {}
            for attribute in VOCAB.attributes:
                names = list(attribute.value_names) + ["not_a_value", UNKNOWN]
                values = tuple(rng.choice(names, size=int(rng.integers(1, 3)), replace=False))
                conf = float(rng.choice([np.nan, -0.5, 1.7, rng.random()]))
                scores = {n: float(rng.normal(0.3, 0.5)) for n in rng.choice(names, 3)}
                estimates[attribute.key] = est(attribute.key, values, conf, scores)
            sources[source] = estimates
        for strategy in STRATEGIES:
            row = fuse("img", sources, VOCAB, strategy=strategy)
            assert 0.0 <= row.confidence <= 1.0
            for key, e in row.attributes.items():
                assert set(e.values) <= VOCAB.allowed_values(key)
                assert 0.0 <= e.confidence <= 1.0 and not math.isnan(e.confidence)
                assert e.is_unknown or e.confidence >= TH.low
                if not VOCAB.attribute(key).multi:
                    assert len(e.values) == 1


def test_fuse_row_overall_confidence_strategies_and_seed_keys():
    tags = {"hair_length": est("hair_length", "long", 0.9, evidence=("long_hair",)),
            "gender": est("gender", "female", 0.95, evidence=("1girl",))}
    row = fuse("img1", {"tags": tags}, VOCAB, strategy="tag_priority", versions={"tags": "tags-1"})
    assert row.strategy == "tag_priority"
    assert set(row.strategies.values()) == {"tag_priority"}
    assert row.confidence == pytest.approx((0.9 + 0.95) / 2)  # mean over answered attributes only
    assert row.attributes["hair_length"].evidence == ("tags", "long_hair")
    seed = row.to_dict(VOCAB)
    assert set(seed) == SEED_KEYS
    assert set(row.to_dict(VOCAB, seed_labels=True)) == SEED_KEYS - {"Skin Tone"} | {"Ethnicity"}
    assert seed["Hair Length"] == "long"
    assert seed["Hair Color"] == [UNKNOWN]
    assert row.versions == {"tags": "tags-1"}


def test_tag_parse_is_accepted_as_the_tags_source_and_fills_the_context():
    parse = TagParse("img", {"gender": est("gender", "male", 0.9)}, tag_count=12, character_count=2)
    seen = {}

    class Recorder:
        def choose_for(self, attribute, sources, context):
            seen[attribute.key] = context
            return "tags_only" if attribute.key == "gender" else "clip_only"

    row = fuse("img", {"tags": parse}, VOCAB, policy=Recorder())
    assert row.strategy == LEARNED_POLICY
    assert row.strategies["gender"] == "tags_only" and row.strategies["age"] == "clip_only"
    assert row.attributes["gender"].values == ("male",)
    assert seen["gender"] == FusionContext(tag_count=12, character_count=2)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="Unknown fusion strategy"):
        fuse("img", {}, VOCAB, strategy="majority_vote")
    with pytest.raises(ValueError, match="Unknown fusion source"):
        fuse("img", {"tag": {}}, VOCAB)
    with pytest.raises(ConfigError):
        Thresholds(accept=0.2, low=0.5)

    class Broken:
        def choose_for(self, attribute, sources, context):
            return "coin_flip"

    with pytest.raises(ConfigError, match="not a registered strategy"):
        fuse("img", {}, VOCAB, policy=Broken())


def test_confidence_formulas_are_posteriors():
    assert agreement_confidence(0.6, 0.6, 1.0) == pytest.approx(0.6 ** 2 / (0.6 ** 2 + 0.4 ** 2))
    assert agreement_confidence(0.9, 0.1, 0.2) == pytest.approx(0.9)  # never below the stronger source
    assert disagreement_confidence(0.9, 0.5, 0.2) == pytest.approx(0.45 / (0.45 + 0.05 + 0.1 * 0.5 * 0.8))
    assert disagreement_confidence(1.0, 1.0, 0.0) <= 1.0

