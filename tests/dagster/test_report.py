"""The report's "accuracy against labels": held-out images only, `unknown` counted as wrong, and
the report says both."""

from __future__ import annotations

import itertools

from charattr_core.schema import load_vocabulary
from charattr_core.splits import split_of
from charattr_dagster.assets.report import ReportTally, render

VOCAB = load_vocabulary()


def ids_in(split: str, n: int) -> list[str]:
    return list(itertools.islice((i for i in (f"{k:032x}" for k in itertools.count()) if split_of(i) == split), n))


def row(image_id: str, **answers: list[str]) -> dict:
    out = {"image_id": image_id, "confidence": 0.9, "attribute_strategies": "{}", "evidence": "{}", "versions": "{}",
           "notes": ""}
    for key in VOCAB.keys:
        out[key] = answers.get(key, ["unknown"])
        out[f"{key}_confidence"] = 0.9 if key in answers else 0.0
    return out


def test_accuracy_counts_held_out_images_only_and_unknown_as_wrong(tmp_path):
    right, unknown, wrong = ids_in("holdout", 3)
    trained_on = ids_in("policy_train", 4) + ids_in("probe_fit", 2)
    labels = {i: {"hair_length": ("long",), "hair_color": ("blonde", "blue")} for i in (right, unknown, wrong, *trained_on)}
    tally = ReportTally(VOCAB, labels)
    tally.add_rows([row(right, hair_length=["long"], hair_color=["blonde"]),  # Jaccard 1/2
                    row(unknown),  # no answer at all: wrong, not left out
                    row(wrong, hair_length=["short"], hair_color=["blonde", "blue"]),
                    # Images the learned stages were trained on answer perfectly; they must not count.
                    *(row(i, hair_length=["long"], hair_color=["blonde", "blue"]) for i in trained_on)])

    accuracy = tally.accuracy()
    assert accuracy["hair_length"] == (1 / 3, 3)
    assert accuracy["hair_color"] == ((0.5 + 0 + 1) / 3, 3)
    assert set(accuracy) == {"hair_length", "hair_color"}

    markdown, html_path, _pngs = render(tally, None, tmp_path)
    section = markdown[markdown.index("## Accuracy against labels"):]
    assert "held-out images only" in section and "`unknown` answer counts as wrong" in section
    assert "3 labelled held-out images" in section and "6 labelled images of the training splits" in section
    page = html_path.read_text(encoding="utf-8")
    assert "held-out images only" in page and "unknown` answer counts as wrong" in page
