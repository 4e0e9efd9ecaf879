"""Evaluation metrics on tiny cases computed by hand, intervals, comparisons and report files."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from charattr_core.evaluation import (OVERALL, EvalExample, answer_score, evaluate, expected_calibration_error)
from charattr_core.fusion import FusionContext
from charattr_core.records import AttributeEstimate
from charattr_core.schema import UNKNOWN, load_vocabulary

VOCAB = load_vocabulary()


def est(attr, values, conf):
    values = (values,) if isinstance(values, str) else tuple(values)
    return AttributeEstimate(attr, values, conf)


def hand_examples() -> list[EvalExample]:
    """Four images; the tags' answers and the labels are chosen so every metric is easy by hand."""
    rows = [  # (hair_length tag answer, its confidence, label) ; hair_color (answer, conf, label)
        (("short", 0.9, "short"), (("black",), 0.8, ("black", "red"))),
        (("long", 0.7, "long"), (("blonde",), 0.9, ("blonde",))),
        (("short", 0.6, "long"), None),
        (None, None),
    ]
    examples = []
    for i, (length, color) in enumerate(rows):
        tags, labels = {}, {"hair_length": (["short", "long", "long", "medium"][i],)}
        if length:
            tags["hair_length"] = est("hair_length", length[0], length[1])
        if color:
            tags["hair_color"] = est("hair_color", color[0], color[1])
            labels["hair_color"] = color[2]
        examples.append(EvalExample(f"img{i}", {"tags": tags}, FusionContext(), labels))
    return examples


@pytest.fixture(scope="module")
def report():
    return evaluate(hand_examples(), VOCAB, strategies=("tags_only",), sources=("tags", "clip"), n_bootstrap=300, seed=3)


def test_answer_score_is_exact_match_or_jaccard():
    assert answer_score(("short",), ("short",), multi=False) == 1.0
    assert answer_score(("long",), ("short",), multi=False) == 0.0
    assert answer_score((UNKNOWN,), ("short",), multi=False) == 0.0
    assert answer_score(("black", "red"), ("black", "blonde"), multi=True) == pytest.approx(1 / 3)


def test_expected_calibration_error_by_hand():
    # bins 9: |1.9 - 1|, 5: |0.55 - 1|, 1: |0.15 - 0| -> (0.9 + 0.45 + 0.15) / 4
    assert expected_calibration_error([0.95, 0.95, 0.55, 0.15], [1, 0, 1, 0]) == pytest.approx(0.375)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)  # 1.0 falls in the last bin


def test_single_valued_metrics_by_hand(report):
    r = report.results[("tags", "hair_length")]
    assert r["accuracy"].value == pytest.approx(2 / 4)  # the unknown answer counts as wrong
    assert r["coverage"].value == pytest.approx(3 / 4)
    assert r["selective_accuracy"].value == pytest.approx(2 / 3)
    assert r["ece"].value == pytest.approx((0.1 + 0.3 + 0.6) / 3)
    # F1: short 2/(2+1), long 2/(2+1), medium 0 (the unknown answer is a false negative).
    assert r["macro_f1"].value == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_multi_valued_metrics_by_hand(report):
    r = report.results[("tags", "hair_color")]
    assert r["accuracy"].value == pytest.approx((0.5 + 1.0) / 2)  # Jaccard {black} vs {black, red} = 1/2
    assert r["macro_f1"].value == pytest.approx((1 + 0 + 1) / 3)  # black, red (missed), blonde
    assert report.n_items == {"hair_color": 2, "hair_length": 4}


def test_overall_pools_items_and_averages_f1_over_attributes(report):
    r = report.results[("tags", OVERALL)]
    assert r["accuracy"].value == pytest.approx((2 + 1.5) / 6)
    assert r["coverage"].value == pytest.approx(5 / 6)
    assert r["ece"].value == pytest.approx((0.2 + 0.3 + 0.6 + 0.3) / 5)
    assert r["macro_f1"].value == pytest.approx(((4 / 3) / 3 + 2 / 3) / 2)


def test_a_missing_source_scores_zero_with_no_coverage(report):
    r = report.results[("clip", OVERALL)]
    assert r["accuracy"].value == 0.0 and r["coverage"].value == 0.0
    assert np.isnan(r["ece"].value)


def test_intervals_contain_the_estimate_and_are_reproducible(report):
    again = evaluate(hand_examples(), VOCAB, strategies=("tags_only",), sources=("tags", "clip"), n_bootstrap=300, seed=3)
    for key, metrics in report.results.items():
        for name, iv in metrics.items():
            if not np.isnan(iv.value):
                assert iv.low - 1e-9 <= iv.value <= iv.high + 1e-9, (key, name)
            assert again.results[key][name] == iv or np.isnan(iv.value)
    assert report.results[("tags", OVERALL)]["accuracy"].high > report.results[("tags", OVERALL)]["accuracy"].low


def test_paired_comparison(report):
    same = report.compare("tags", "tags_only")  # identical answers: the difference is exactly 0
    assert same.margin == 0.0 and same.low == 0.0 and same.high == 0.0
    assert not same.significant and str(same).startswith("tags ties tags_only on accuracy (overall; 95% CI")
    better = report.compare("tags", "clip")
    assert better.margin == pytest.approx(3.5 / 6)
    assert 0.0 <= better.low < better.margin < better.high  # 4 images: a resample can hold only the misses
    assert "beats clip by 58.3 points" in str(better)


def test_report_files(report, tmp_path):
    csv_path = report.to_csv(tmp_path / "out" / "eval.csv")
    rows = list(csv.DictReader(csv_path.open()))
    acc = [r for r in rows if r["method"] == "tags" and r["attribute"] == "hair_length" and r["metric"] == "accuracy"]
    assert float(acc[0]["value"]) == pytest.approx(0.5)
    assert {r["method"] for r in rows} == {"tags", "clip", "tags_only"}
    md = report.to_markdown()
    assert "| tags | 58.3 [" in md and "hair_length (n=4)" in md
    png = report.reliability_plot(tmp_path / "rel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_evaluation_does_not_crash():
    empty = evaluate([], VOCAB, strategies=("tags_only",))
    assert empty.n_images == 0 and empty.attributes == ()
    assert np.isnan(empty.results[("tags", OVERALL)]["accuracy"].value)
    assert empty.to_markdown()
