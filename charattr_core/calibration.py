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
confidences only, never answers, so accuracy, macro-F1 and coverage are unchanged (an answer
whose calibrated confidence falls below the `low` threshold stays answered: the strategy's floor
applies to the confidence it reasoned with).

In production the maps travel inside the published fusion policy (`FusionPolicy.calibration`,
saved in its `policy.json` and covered by its hash and fingerprint): `learning.train_and_judge_policy`
fits them for the sources and `learned_policy` whenever it trains a candidate, and `fusion.fuse`
maps each fused answer (`calibrate_fused`). What the labels can teach: user corrections calibrate
every source; a self-supervised label (a confident tag, hidden from the sources) leaves the tags
source of that attribute without answers, so the tags' own map only comes from independent labels
(corrections), and the `learned_policy` map is learnt from answers made without those tags.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .config import ALL_STRATEGIES
from .fusion import LEARNED_POLICY, StrategyChooser, Thresholds, clean_estimate
from .records import SOURCES, AttributeEstimate
from .schema import Attribute, Vocabulary

PRODUCTION_METHODS = SOURCES + (LEARNED_POLICY,)  # the maps a published policy keeps (what `fuse` applies)
RAW_CONFIDENCE = "raw_confidence"  # evidence `raw_confidence:<x>`: the fused confidence before calibration
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

    def _knots(self, method: str, attribute: str) -> Knots | None:
        return self.maps.get((method, attribute)) or self.maps.get((method, POOLED))

    def calibrate(self, method: str, attribute: str, confidence: float) -> float:
        knots = self._knots(method, attribute)
        return confidence if knots is None else _apply(knots, confidence)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods that have a map (their own or pooled), sorted."""
        return tuple(sorted({m for m, _a in self.maps}))

    def restricted(self, methods: Sequence[str]) -> "ConfidenceCalibration":
        """Only the maps of `methods` (a policy keeps those that production fusion applies)."""
        return ConfidenceCalibration({k: v for k, v in self.maps.items() if k[0] in methods})

    @property
    def fingerprint(self) -> str:
        """A digest of every map: two calibrations that may map a confidence differently never share it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line for run summaries and metadata."""
        return f"isotonic maps of {', '.join(self.methods)} (calibration {self.fingerprint})"

    def calibrate_fused(self, method: str, attribute: Attribute, sources: Mapping[str, AttributeEstimate],
                        fused: AttributeEstimate) -> AttributeEstimate:
        """A fused answer with calibrated confidences; its values, scores and order are unchanged.

        `method` is what produced the answer (`learned_policy`, or a fixed strategy's name). The
        answer's confidence goes through that method's map and the raw one stays in the evidence
        (`raw_confidence:0.9000`); each source the answer consulted (a supporter or a
        `conflict:<source>`) with a map adds `confidence:<source>=<calibrated>,raw=<raw>`. An
        unknown answer claims nothing and is returned as it is, and so is an answer no map touches."""
        if fused.is_unknown:
            return fused
        confidence, extra = fused.confidence, []
        knots = self._knots(method, attribute.key)
        if knots is not None:
            confidence = _apply(knots, fused.confidence)
            extra.append(f"{RAW_CONFIDENCE}:{fused.confidence:.4f}")
        for name in SOURCES:
            knots = self._knots(name, attribute.key)
            if knots is None or (name not in fused.evidence and f"conflict:{name}" not in fused.evidence):
                continue
            answer = clean_estimate(attribute, sources.get(name), name)
            if answer is not None:
                extra.append(f"confidence:{name}={_apply(knots, answer.confidence):.4f},raw={answer.confidence:.4f}")
        if not extra:
            return fused
        return replace(fused, confidence=confidence, evidence=tuple(fused.evidence) + tuple(extra))

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
    def from_dict(cls, data: Mapping) -> "ConfidenceCalibration":
        """From `to_dict()`; a malformed map (unequal lengths, unsorted or empty knots) is a ValueError."""
        maps = {}
        for e in data["maps"]:
            xs, ys = np.asarray(e["confidence"], dtype=np.float64), np.asarray(e["calibrated"], dtype=np.float64)
            # (pooled block means of equal confidences may differ in the last bit: a tolerance)
            if xs.ndim != 1 or xs.shape != ys.shape or not xs.size or np.any(np.diff(xs) < -1e-9):
                raise ValueError(f"the calibration map of {e['method']}/{e['attribute']} is not a sorted list of knots")
            maps[(str(e["method"]), str(e["attribute"]))] = (xs, ys)
        return cls(maps)

    @classmethod
    def load(cls, path: str | Path) -> "ConfidenceCalibration":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


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
    from .evaluation import answer_score, labelled_predictions

    named = dict(choosers or {})
    if policy is not None:
        named[LEARNED_POLICY] = policy
    methods = tuple(sources) + tuple(strategies) + tuple(named)

    def items():
        for example in examples:
            for attribute, label, method, predicted in labelled_predictions(example, vocabulary, methods, thresholds,
                                                                            named):
                if not predicted.is_unknown:
                    yield (method, attribute.key, float(predicted.confidence),
                           answer_score(predicted.values, label, attribute.multi))

    return fit_from_items(items(), min_items)
