"""Calibrated confidence (issue 14): isotonic maps fitted on the calibration split lower held-out ECE."""

from __future__ import annotations

import numpy as np
import pytest

from charattr_core.calibration import (ConfidenceCalibration, fit_calibration, fit_from_items, isotonic_fit)
from charattr_core.evaluation import EvalExample, evaluate, expected_calibration_error
from charattr_core.fusion import FusionContext
from charattr_core.records import AttributeEstimate
from charattr_core.schema import load_vocabulary

VOCAB = load_vocabulary()


def overconfident_tags(n: int, seed: int) -> list[EvalExample]:
    """Tags that always say 0.9 for hair length and are right 60 % of the time (like noisy tags)."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        right = rng.random() < 0.6
        truth = "long"
        answer = truth if right else "short"
        tags = {"hair_length": AttributeEstimate("hair_length", (answer,), 0.9, ("tag",), {answer: 0.9})}
        examples.append(EvalExample(f"img{seed}-{i}", {"tags": tags}, FusionContext(), {"hair_length": (truth,)}))
    return examples


def test_isotonic_fit_is_monotone_and_pools_violations():
    xs, ys = isotonic_fit([0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 1.0])
    assert np.all(np.diff(ys) >= 0)
    assert ys.tolist() == pytest.approx([0.0, 0.5, 1.0])  # the middle violation pooled
    assert xs.tolist() == pytest.approx([0.1, 0.25, 0.4])


def test_equal_confidences_make_one_knot():
    # Tags say the same confidence for many items: one knot with their mean score, never a
    # ladder of knots at one confidence that interpolation would read as any of them.
    xs, ys = isotonic_fit([0.9, 0.9, 0.9, 0.9, 0.5, 0.5], [0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    assert xs.tolist() == pytest.approx([0.5, 0.9]) and ys.tolist() == pytest.approx([0.5, 0.5])
    calibration = fit_from_items([("tags", "hair_length", 0.9, float(i % 5 < 3)) for i in range(100)])
    assert calibration.calibrate("tags", "hair_length", 0.9) == pytest.approx(0.6)


def test_calibration_reduces_ece_on_a_synthetic_miscalibrated_case():
    calibration = fit_calibration(overconfident_tags(400, seed=1), VOCAB, strategies=("tags_only",), sources=("tags",))
    held_out = overconfident_tags(400, seed=2)
    raw = evaluate(held_out, VOCAB, strategies=("tags_only",), sources=("tags",), n_bootstrap=50)
    calibrated = evaluate(held_out, VOCAB, strategies=("tags_only",), sources=("tags",), n_bootstrap=50,
                          calibration=calibration)
    for method in ("tags", "tags_only"):
        assert raw.metric(method, metric="ece").value > 0.25  # says 0.9, right ~60 %
        assert calibrated.metric(method, metric="ece").value < 0.06
        # answers are untouched: only the confidence moves
        assert calibrated.metric(method).value == raw.metric(method).value
        assert calibrated.metric(method, metric="coverage").value == raw.metric(method, metric="coverage").value


def test_small_attributes_fall_back_to_the_pooled_map_and_unknown_stays_unknown():
    items = [("tags", "hair_length", 0.9, 1.0 if i % 2 else 0.0) for i in range(60)]
    items += [("tags", "eye_color", 0.9, 1.0)] * 5  # too few for their own map
    calibration = fit_from_items(items, min_items=50)
    assert ("tags", "eye_color") not in calibration.maps
    assert calibration.calibrate("tags", "eye_color", 0.9) == pytest.approx(calibration.calibrate("tags", "*", 0.9))
    assert calibration.calibrate("probe", "eye_color", 0.7) == 0.7  # no map: unchanged
    unknown = AttributeEstimate("hair_length")
    assert calibration.apply("tags", unknown) is unknown


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    conf = rng.random(200)
    items = [("learned_policy", "gender", float(c), float(rng.random() < c * 0.7)) for c in conf]
    calibration = fit_from_items(items)
    loaded = ConfidenceCalibration.load(calibration.save(tmp_path / "calibration.json"))
    for c in (0.05, 0.4, 0.93):
        assert loaded.calibrate("learned_policy", "gender", c) == pytest.approx(calibration.calibrate("learned_policy", "gender", c))
    after = [calibration.calibrate("learned_policy", "gender", float(c)) for c in conf]
    hits = [s for *_x, s in items]
    assert expected_calibration_error(after, hits) < expected_calibration_error(conf, hits)
