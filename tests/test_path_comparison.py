"""Comparing two CLIP inference paths (`charattr eval --compare-precision`): the paired difference
of zero-shot and probe accuracy over the same held-out (image, attribute) items.

`evaluation.compare_runs` is checked on hand-made runs (pairing by image id, not by position; a run
against itself; different items refused; the same resamples as `evaluate`), then the command on
the tiny random-weight model, fp32 against PyTorch dynamic int8."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

from charattr_core.cli import main
from charattr_core.evaluation import OVERALL, EvalExample, compare_runs, evaluate
from charattr_core.fusion import FusionContext
from charattr_core.records import AttributeEstimate
from charattr_core.schema import load_vocabulary

VOCAB = load_vocabulary()
LENGTHS = ("short", "medium", "long")
GENDERS = ("female", "male")
METHODS = ("clip", "probe")


def run_examples(n: int = 30, *, flip: int | None = None) -> list[EvalExample]:
    """`n` images with clip and probe answers, right about two times in three; `flip` makes the
    clip answer on hair length of that image right when it was wrong and wrong when it was right."""
    rng = random.Random(11)
    examples = []
    for i in range(n):
        length, gender = rng.choice(LENGTHS), rng.choice(GENDERS)
        clip_length = length if rng.random() < 0.66 else rng.choice([v for v in LENGTHS if v != length])
        if i == flip:
            clip_length = length if clip_length != length else next(v for v in LENGTHS if v != length)
        probe_gender = gender if rng.random() < 0.66 else next(v for v in GENDERS if v != gender)
        sources = {"clip": {"hair_length": AttributeEstimate("hair_length", (clip_length,), 0.7),
                            "gender": AttributeEstimate("gender", (gender,), 0.6)},
                   "probe": {"gender": AttributeEstimate("gender", (probe_gender,), 0.8)}}
        examples.append(EvalExample(f"img{i:02d}", sources, FusionContext(),
                                    {"hair_length": (length,), "gender": (gender,)}))
    return examples


def run(examples, *, keep=METHODS, seed=5, n_bootstrap=400):
    return evaluate(examples, VOCAB, strategies=(), sources=METHODS, keep_items=keep, n_bootstrap=n_bootstrap, seed=seed)


def first_wrong_clip_length(examples) -> int:
    return next(i for i, e in enumerate(examples)
                if e.sources["clip"]["hair_length"].values != e.labels["hair_length"])


def test_a_run_against_itself_differs_by_exactly_zero_with_a_zero_width_interval():
    report = run(run_examples())
    for method in METHODS:
        for attribute in (OVERALL, "hair_length", "gender"):
            same = compare_runs(report, report, method, attribute)
            assert (same.margin, same.low, same.high) == (0.0, 0.0, 0.0), (method, attribute)


def test_items_are_paired_by_image_and_attribute_not_by_reading_order():
    examples = run_examples()
    shuffled = examples[:]
    random.Random(3).shuffle(shuffled)
    assert [e.image_id for e in shuffled] != [e.image_id for e in examples]
    a, b = run(examples), run(shuffled)
    for method in METHODS:  # the same answers read in another order: still no difference at all
        same = compare_runs(a, b, method)
        assert (same.margin, same.low, same.high) == (0.0, 0.0, 0.0), method

    # One answer made right on the shuffled side: exactly one item of 60 (1 of 30 on hair length) moves.
    flip = first_wrong_clip_length(examples)
    changed = run_examples(flip=flip)
    changed = [changed[examples.index(e)] for e in shuffled]
    better = compare_runs(run(changed), a, "clip", names=("changed", "original"))
    assert better.margin == pytest.approx(1 / 60)
    assert compare_runs(run(changed), a, "clip", "hair_length").margin == pytest.approx(1 / 30)
    assert compare_runs(run(changed), a, "clip", "gender").margin == 0.0
    assert 0.0 <= better.low <= better.margin <= better.high  # only resamples without that image show 0
    assert better.high > 0.0 and str(better).startswith("changed beats original by 1.7 points of accuracy")


def test_the_interval_comes_from_the_same_image_resamples_as_the_evaluation():
    examples = run_examples()
    a = run(examples)
    # Another path that answers "short" everywhere: many items differ, so the interval is wide and
    # its ends depend on which images each resample drew.
    always_short = [EvalExample(e.image_id, {**e.sources, "clip": {
        **e.sources["clip"], "hair_length": AttributeEstimate("hair_length", ("short",), 0.7)}}, e.context, e.labels)
        for e in examples]
    b = run(always_short)
    paired = compare_runs(b, a, "clip")
    assert paired.high - paired.low > 0.05
    # Same images in the same order and the same seed: evaluate's own replicates, subtracted.
    replicates = b._replicates[("clip", OVERALL)]["accuracy"] - a._replicates[("clip", OVERALL)]["accuracy"]
    low, high = np.percentile(replicates, [2.5, 97.5])
    assert (paired.low, paired.high) == pytest.approx((low, high), abs=1e-12)
    assert paired.margin == pytest.approx(b.metric("clip").value - a.metric("clip").value, abs=1e-12)


def test_runs_over_different_items_are_refused():
    examples = run_examples()
    fewer = run(examples[:-1])
    with pytest.raises(ValueError, match=r"did not score the same items of clip on overall \(2 only in the first"):
        compare_runs(run(examples), fewer, "clip")
    renamed = [EvalExample("other" if i == 0 else e.image_id, e.sources, e.context, e.labels)
               for i, e in enumerate(examples)]
    with pytest.raises(ValueError, match="did not score the same items"):
        compare_runs(run(examples), run(renamed), "probe", "gender")
    with pytest.raises(ValueError, match="kept no per-item scores of clip"):
        compare_runs(run(examples, keep=()), run(examples), "clip")


def test_per_item_scores_are_kept_only_when_asked():
    assert run(run_examples(), keep=()).item_scores == {} and run(run_examples(), keep=()).image_ids == ()
    kept = run(run_examples(), keep=("probe",))
    assert set(kept.item_scores) == {("probe", "hair_length"), ("probe", "gender")}


# ---- the command, on the tiny random-weight model ---------------------------------------------

TINY = ["--model", "charattr-tiny", "--pretrained", "random", "--bootstrap", "100"]


def _rows(path):
    with path.open(newline="", encoding="utf-8") as f:
        return {(r["method"], r["attribute"]): r for r in csv.DictReader(f)}


def test_eval_compares_fp32_with_int8_on_the_same_held_out_items(demo_source, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    code = main(["eval", str(demo_source), *TINY, "--database-url", f"sqlite:///{tmp_path / 'cache.db'}",
                 "--out-dir", str(out_dir), "--precision", "fp32", "--compare-precision", "int8",
                 "--compare-runtime", "torch"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = _rows(out_dir / "path_comparison.csv")
    overall = rows[("clip", OVERALL)]
    # Two paths, two model keys: the int8 path names itself, so its embeddings and probes never mix with fp32's.
    assert overall["asked_model_key"] == "charattr-tiny/random"
    assert overall["compared_model_key"] == "charattr-tiny/random@torch-int8"
    assert (overall["asked_path"], overall["compared_path"]) == ("torch fp32", "torch int8")
    evaluation = _rows_long(out_dir / "evaluation.csv")
    compared = _rows_long(out_dir / "compared-torch-int8" / "evaluation.csv")
    attributes = {a for (_m, a) in rows if a != OVERALL}
    assert attributes and {m for (m, _a) in rows} == {"clip", "probe"}
    for (method, attribute), row in rows.items():
        # Each path's accuracy is its own evaluation's, over the same number of items.
        asked_acc, compared_acc = evaluation[(method, attribute)], compared[(method, attribute)]
        assert float(row["asked_accuracy"]) == pytest.approx(float(asked_acc["value"]), abs=1e-5)
        assert float(row["compared_accuracy"]) == pytest.approx(float(compared_acc["value"]), abs=1e-5)
        assert int(row["n_items"]) == int(asked_acc["n_items"]) == int(compared_acc["n_items"])
        # Paired over the same items, the difference is exactly the difference of the accuracies.
        assert float(row["difference"]) == pytest.approx(float(row["compared_accuracy"]) - float(row["asked_accuracy"]),
                                                         abs=1e-5)
        assert float(row["difference_low"]) <= float(row["difference"]) + 1e-9 <= float(row["difference_high"]) + 2e-9
    markdown = (out_dir / "evaluation.md").read_text(encoding="utf-8")
    assert "## Inference path: torch int8 against torch fp32" in markdown and markdown.strip() == out.strip()
    assert "torch int8 against torch fp32 on" in err and "  clip: " in err and "  probe: " in err


def _rows_long(path):
    with path.open(newline="", encoding="utf-8") as f:
        return {(r["method"], r["attribute"]): r for r in csv.DictReader(f) if r["metric"] == "accuracy"}


def test_eval_comparing_a_path_with_itself_reports_zero_differences(demo_source, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    code = main(["eval", str(demo_source), *TINY, "--database-url", f"sqlite:///{tmp_path / 'cache.db'}",
                 "--out-dir", str(out_dir), "--precision", "fp32", "--compare-precision", "fp32",
                 "--compare-runtime", "torch"])
    _out, err = capsys.readouterr()
    assert code == 0, err
    rows = _rows(out_dir / "path_comparison.csv")
    assert len(rows) > 2
    for row in rows.values():
        assert row["asked_model_key"] == row["compared_model_key"]
        assert (float(row["difference"]), float(row["difference_low"]), float(row["difference_high"])) == (0, 0, 0)
    markdown = (out_dir / "evaluation.md").read_text(encoding="utf-8")
    assert "Both are the same path" in markdown and "| torch fp32 (asked) | torch fp32 (compared) |" in markdown
    assert "| clip | overall |" in markdown and "| +0.00 [+0.00, +0.00] |" in markdown


def test_comparing_paths_without_clip_is_a_configuration_error(demo_source, tmp_path, capsys):
    code = main(["eval", str(demo_source), "--no-clip", "--out-dir", str(tmp_path / "eval"),
                 "--compare-precision", "int8"])
    _out, err = capsys.readouterr()
    assert code == 1 and err.strip().splitlines()[-1] == (
        "charattr: error: --compare-precision compares CLIP inference paths; it cannot be used with --no-clip.")
