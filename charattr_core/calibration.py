"""Confidence that means probability: per-method, per-attribute isotonic calibration.

A source or a fusion strategy says "0.9" for an answer; on held-out data that answer should then
be right about 90 % of the time (ECE, `evaluation.py`). Tags say ~0.9 even when the tag is
wrong, and strategies inherit that. Here each method's answer confidence is mapped, per
attribute, to the mean answer score (the same score the accuracy uses: 1/0 or Jaccard) of
answers with that confidence on the `probe_calibration` split: images the probes were not
fitted on, the policy was not trained on, and the evaluation does not score.

The map is isotonic regression (pool-adjacent-violators, numpy only): monotone, so a more
confident answer never gets a lower calibrated confidence, and it needs no parametric form.
An attribute with fewer than `MIN_ITEMS` calibration answers uses the method's map pooled over
attributes; a method with too few answers altogether stays as it is. Calibration changes
confidences only, never answers, so accuracy, macro-F1 and coverage are unchanged.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .config import ALL_STRATEGIES
from .fusion import LEARNED_POLICY, StrategyChooser, Thresholds
from .records import SOURCES, AttributeEstimate
from .schema import Vocabulary

MIN_ITEMS = 50  # fewer calibration answers than this for an attribute: use the method's pooled map
POOLED = "*"
Knots = tuple[np.ndarray, np.ndarray]  # (confidence, calibrated) at the isotonic blocks' means


def isotonic_fit(confidence: Sequence[float], score: Sequence[float]) -> Knots:
    """Pool-adjacent-violators: the non-decreasing step function closest to `score` in least squares,
    returned as knots (each block's mean confidence and mean score) for linear interpolation.

    Equal confidences form one block first: a map must give one answer per confidence, and sources
    like the tags say the same few confidences (0.9, ...) for thousands of items."""
    x = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(score, dtype=np.float64)
    unique, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=y, minlength=unique.size)
    means: list[float] = []
    weights: list[float] = []
    xs: list[float] = []
    for xi, total, n in zip(unique, sums, counts):
        means.append(total / n)
        weights.append(float(n))
        xs.append(float(xi))
        while len(means) > 1 and means[-2] > means[-1]:  # a violation: pool the last two blocks
            w = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w
            xs[-2] = (xs[-2] * weights[-2] + xs[-1] * weights[-1]) / w
            weights[-2] = w
            del means[-1], weights[-1], xs[-1]
    return np.asarray(xs), np.asarray(means)


def _apply(knots: Knots, confidence: float) -> float:
    xs, ys = knots
    return float(np.clip(np.interp(confidence, xs, ys), 0.0, 1.0))


@dataclass
class ConfidenceCalibration:
    """Isotonic maps per (method, attribute); `POOLED` as attribute is the method's fallback."""

    maps: dict[tuple[str, str], Knots] = field(default_factory=dict)

    def calibrate(self, method: str, attribute: str, confidence: float) -> float:
        knots = self.maps.get((method, attribute)) or self.maps.get((method, POOLED))
        return confidence if knots is None else _apply(knots, confidence)

    def apply(self, method: str, estimate: AttributeEstimate) -> AttributeEstimate:
        """The same answer with its confidence calibrated (an unknown answer claims nothing)."""
        if estimate.is_unknown:
            return estimate
        return replace(estimate, confidence=self.calibrate(method, estimate.attribute, estimate.confidence))

    def to_dict(self) -> dict:
        return {"maps": [{"method": m, "attribute": a, "confidence": xs.tolist(), "calibrated": ys.tolist()}
                         for (m, a), (xs, ys) in sorted(self.maps.items())]}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ConfidenceCalibration":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls({(e["method"], e["attribute"]): (np.asarray(e["confidence"]), np.asarray(e["calibrated"]))
                    for e in data["maps"]})


def fit_from_items(items: Iterable[tuple[str, str, float, float]], min_items: int = MIN_ITEMS) -> ConfidenceCalibration:
    """From (method, attribute, confidence, score) of answered calibration items."""
    per: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for method, attribute, confidence, score in items:
        for key in ((method, attribute), (method, POOLED)):
            per[key][0].append(confidence)
            per[key][1].append(score)
    return ConfidenceCalibration({key: isotonic_fit(c, s) for key, (c, s) in per.items() if len(c) >= min_items})


def fit_calibration(examples: Iterable, vocabulary: Vocabulary, *, policy: StrategyChooser | None = None,
                    strategies: Sequence[str] = ALL_STRATEGIES, thresholds: Thresholds = Thresholds(),
                    sources: Sequence[str] = SOURCES, choosers: Mapping[str, StrategyChooser] | None = None,
                    min_items: int = MIN_ITEMS) -> ConfidenceCalibration:
    """Fit every method `evaluation.evaluate` scores on labelled calibration-split examples."""
    from .evaluation import _predict, answer_score

    named = dict(choosers or {})
    if policy is not None:
        named[LEARNED_POLICY] = policy
    methods = tuple(sources) + tuple(strategies) + tuple(named)

    def items():
        for example in examples:
            for key, label in example.labels.items():
                if key not in vocabulary.keys or not label:
                    continue
                attribute = vocabulary.attribute(key)
                for method in methods:
                    predicted = _predict(example, attribute, method, thresholds, named)
                    if not predicted.is_unknown:
                        yield method, key, float(predicted.confidence), answer_score(predicted.values, tuple(label),
                                                                                     attribute.multi)

    return fit_from_items(items(), min_items)
