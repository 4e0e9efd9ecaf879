"""Held-out evaluation of every source, every fixed strategy and the learned fusion policy.

What is measured, per attribute and overall, on labelled held-out examples (`EvalExample`):

- accuracy: the mean `answer_score` over labelled items, where an `unknown` answer scores 0.
  `answer_score` is 1/0 exact match for a single-valued attribute and the Jaccard overlap of
  the value sets for a multi-valued one (so "accuracy" of hair colour gives partial credit for
  naming one of two colours). The same function is the learned policy's reward: what the policy
  optimises is exactly what this table reports.
- macro-F1: per value, F1 = 2TP / (2TP + FP + FN), averaged over the values that occur in the
  labels or the answers. An `unknown` answer is a false negative for the true value(s) and a
  false positive for none. Overall macro-F1 is the mean of the attributes' macro-F1.
- coverage: the fraction of items answered (not `unknown`); selective accuracy: accuracy over
  the answered items only (what a user who ignores `unknown` gets).
- ECE: expected calibration error over answered items, 10 equal-width confidence bins,
  `sum_bins |sum(confidence) - sum(score)| / answered` (an unknown answer claims nothing, so
  it is not in the calibration).
- Overall accuracy, coverage and ECE pool every (image, attribute) item (micro average).
- raw ECE (`RAW_ECE`, only when a calibration is given): the ECE of the same answers with the
  confidences they had before calibration, so both can be read side by side.

Uncertainty: every number has a 95% percentile-bootstrap interval from resampling *images* with
replacement (B = 1000, fixed seed), so the several attributes of one image move together. All
methods are scored on the same resamples, which makes `EvalReport.compare(a, b)` a paired
bootstrap of the difference ("the policy beats the best fixed strategy by X points [lo, hi]").
The best fixed strategy is picked on the same data it is compared on, which flatters it a little
(a conservative bias for a claim that the policy beats it).

Honest limits: with self-supervised labels (confident tags hidden from the sources), the "truth"
is the tag parser's confident answer, so these numbers measure agreement with confident tags on
images where the tags were withheld: they say nothing about errors shared by tags and labels,
and the tags source alone has no coverage on such items by construction. Held-out user
corrections are the only independent ground truth. Per-item results (a few numbers and value
indices per image, attribute and method) are held in memory: evaluate a sample of tens of
thousands of held-out images, which already gives intervals of a fraction of a point.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .config import ALL_STRATEGIES
from .fusion import (LEARNED_POLICY, FusionContext, StrategyChooser, Thresholds, check_strategy,
                     clean_estimate, fuse_attribute)
from .records import SOURCES, AttributeEstimate
from .schema import UNKNOWN, Vocabulary

N_BINS = 10
METRICS = ("accuracy", "macro_f1", "coverage", "selective_accuracy", "ece")
OVERALL = "overall"
RAW_ECE = "raw_ece"  # ECE before calibration; reported beside "ece" when `evaluate` calibrates


@dataclass
class EvalExample:
    """One labelled image: its sources' estimates (per source, per attribute), context, labels."""

    image_id: str
    sources: dict[str, dict[str, AttributeEstimate]]
    context: FusionContext
    labels: dict[str, tuple[str, ...]]

    def attribute_sources(self, attribute: str) -> dict[str, AttributeEstimate]:
        return {s: est[attribute] for s, est in self.sources.items() if attribute in est}


def answer_score(predicted: Sequence[str], label: Sequence[str], multi: bool) -> float:
    """1/0 exact match (single-valued) or Jaccard overlap (multi-valued); `unknown` scores 0."""
    pred = {v for v in predicted if v != UNKNOWN}
    truth = set(label)
    if not pred or not truth:
        return 0.0
    if not multi:
        return float(predicted[0] == label[0])
    return len(pred & truth) / len(pred | truth)


def expected_calibration_error(confidences: Sequence[float] | np.ndarray, correct: Sequence[float] | np.ndarray,
                               n_bins: int = N_BINS) -> float:
    """ECE with equal-width bins: sum over bins of |sum(confidence) - sum(correct)| / n."""
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.size == 0:
        return float("nan")
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    gap = np.bincount(bins, weights=conf - hit, minlength=n_bins)
    return float(np.abs(gap).sum() / conf.size)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% bootstrap interval."""

    value: float
    low: float
    high: float

    def as_points(self, digits: int = 1) -> str:
        if math.isnan(self.value):
            return "–"
        return f"{100 * self.value:.{digits}f} [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"


@dataclass(frozen=True)
class Comparison:
    """Paired-bootstrap difference `a - b` of one metric, in the metric's units (fractions)."""

    a: str
    b: str
    metric: str
    attribute: str
    margin: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes zero."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        interval = f"({self.attribute}; 95% CI of the difference [{100 * self.low:.1f}, {100 * self.high:.1f}])"
        if round(100 * self.margin, 1) == 0:  # "beats by 0.0 points" would claim what the numbers do not
            return f"{self.a} ties {self.b} on {self.metric} {interval}"
        verb = "beats" if self.margin > 0 else "trails"
        return f"{self.a} {verb} {self.b} by {100 * abs(self.margin):.1f} points of {self.metric} {interval}"


class _ItemLog:
    """Per-item results of one method on one attribute, kept compact for the bootstrap."""

    def __init__(self) -> None:
        self.image: list[int] = []
        self.score: list[float] = []
        self.answered: list[bool] = []
        self.confidence: list[float] = []
        self.raw_confidence: list[float] = []  # before calibration (equal to `confidence` without one)
        self.tp: dict[str, list[int]] = defaultdict(list)  # value -> item indices
        self.fp: dict[str, list[int]] = defaultdict(list)
        self.fn: dict[str, list[int]] = defaultdict(list)

    def add(self, image: int, predicted: AttributeEstimate, label: tuple[str, ...], multi: bool,
            raw_confidence: float | None = None) -> None:
        item = len(self.image)
        answered = not predicted.is_unknown
        pred = set(predicted.values) - {UNKNOWN} if answered else set()
        truth = set(label)
        self.image.append(image)
        self.score.append(answer_score(predicted.values, label, multi) if answered else 0.0)
        self.answered.append(answered)
        self.confidence.append(float(predicted.confidence) if answered else 0.0)
        raw = predicted.confidence if raw_confidence is None else raw_confidence
        self.raw_confidence.append(float(raw) if answered else 0.0)
        for v in pred & truth:
            self.tp[v].append(item)
        for v in pred - truth:
            self.fp[v].append(item)
        for v in truth - pred:
            self.fn[v].append(item)

class _Compiled:
    """Index arrays so that every metric's sums are weighted sums over items."""

    def __init__(self, log: _ItemLog) -> None:
        self.image = np.asarray(log.image, dtype=np.int64)
        self.score = np.asarray(log.score, dtype=np.float64)
        answered = np.asarray(log.answered, dtype=bool)
        self.answered = answered.astype(np.float64)  # an unknown answer already scores 0
        self.bins = self._binned(np.asarray(log.confidence, dtype=np.float64), answered)
        self.raw_bins = (self.bins if log.raw_confidence == log.confidence  # uncalibrated: nothing to add
                         else self._binned(np.asarray(log.raw_confidence, dtype=np.float64), answered))
        values = sorted(set(log.tp) | set(log.fp) | set(log.fn))
        self.classes = [tuple(np.asarray(d.get(v, ()), dtype=np.int64) for d in (log.tp, log.fp, log.fn))
                        for v in values]  # per value: the items where it is a TP, FP, FN

    def _binned(self, conf: np.ndarray, answered: np.ndarray) -> list:
        """Per confidence bin: answered item indices, their confidences and scores."""
        bins = np.minimum((conf * N_BINS).astype(np.int64), N_BINS - 1)
        out = []
        for k in range(N_BINS):
            idx = np.flatnonzero(answered & (bins == k))
            out.append((idx, conf[idx], self.score[idx]))
        return out

    @property
    def size(self) -> int:
        return int(self.image.size)

    def sums(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Weighted sufficient statistics; `weights` is (resamples, images)."""
        w = weights[:, self.image]  # (b, items)
        out = {"n": w.sum(1), "score": w @ self.score, "answered": w @ self.answered,
               "bin_gap": np.stack([w[:, idx] @ (c - s) for idx, c, s in self.bins], axis=1)}
        out["raw_bin_gap"] = (out["bin_gap"] if self.raw_bins is self.bins
                              else np.stack([w[:, idx] @ (c - s) for idx, c, s in self.raw_bins], axis=1))
        f1 = []
        for tp, fp, fn in self.classes:
            t, f_p, f_n = w[:, tp].sum(1), w[:, fp].sum(1), w[:, fn].sum(1)
            den = 2 * t + f_p + f_n
            with np.errstate(invalid="ignore", divide="ignore"):
                f1.append(np.where(den > 0, 2 * t / den, np.nan))
        out["macro_f1"] = _nanmean_rows(np.stack(f1, axis=1)) if f1 else np.full(w.shape[0], np.nan)
        return out


def _nanmean_rows(m: np.ndarray) -> np.ndarray:
    counts = np.sum(~np.isnan(m), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.nansum(m, axis=1) / np.maximum(counts, 1), np.nan)


def _metrics(s: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"accuracy": s["score"] / s["n"], "macro_f1": s["macro_f1"], "coverage": s["answered"] / s["n"],
                "selective_accuracy": s["score"] / s["answered"],
                "ece": np.abs(s["bin_gap"]).sum(1) / s["answered"],
                RAW_ECE: np.abs(s["raw_bin_gap"]).sum(1) / s["answered"]}


@dataclass
class EvalReport:
    """The evaluation's numbers, with the bootstrap replicates kept for paired comparisons."""

    methods: tuple[str, ...]
    attributes: tuple[str, ...]
    n_images: int
    n_items: dict[str, int]
    results: dict[tuple[str, str], dict[str, Interval]]
    n_bootstrap: int
    seed: int
    reliability: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (3, bins): n, conf, score
    # Per-item scores of the methods `evaluate(keep_items=...)` named, for `compare_runs`:
    # the images in reading order, and per (method, attribute) each item's image index and score.
    image_ids: tuple[str, ...] = ()
    item_scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _replicates: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def calibrated(self) -> bool:
        """Whether confidences were calibrated (the report then has `RAW_ECE` beside `ece`)."""
        return any(RAW_ECE in metrics for metrics in self.results.values())

    def metric(self, method: str, attribute: str = OVERALL, metric: str = "accuracy") -> Interval:
        return self.results[(method, attribute)][metric]

    def compare(self, a_method: str, b_method: str, attribute: str = OVERALL, metric: str = "accuracy") -> Comparison:
        """Paired-bootstrap margin of `a - b` (same image resamples for both) with its 95% CI."""
        margin = self.metric(a_method, attribute, metric).value - self.metric(b_method, attribute, metric).value
        diff = self._replicates[(a_method, attribute)][metric] - self._replicates[(b_method, attribute)][metric]
        diff = diff[~np.isnan(diff)]
        lo, hi = (np.percentile(diff, [2.5, 97.5]) if diff.size else (np.nan, np.nan))
        return Comparison(a_method, b_method, metric, attribute, float(margin), float(lo), float(hi))

    def best_fixed(self, attribute: str = OVERALL, metric: str = "accuracy") -> str | None:
        """The fixed strategy or baseline with the best point estimate (None if none evaluated)."""
        fixed = [m for m in self.methods if m in ALL_STRATEGIES and not math.isnan(self.metric(m, attribute, metric).value)]
        return max(fixed, key=lambda m: self.metric(m, attribute, metric).value, default=None)

    def policy_claim(self, attribute: str = OVERALL) -> str | None:
        """The sentence DESIGN asks for: the policy against the best fixed strategy, with its CI."""
        best = self.best_fixed(attribute)
        if LEARNED_POLICY not in self.methods or best is None:
            return None
        c = self.compare(LEARNED_POLICY, best, attribute)
        verdict = "" if c.significant else " — not significant at 95%"
        return f"{c}{verdict}"

    def to_markdown(self) -> str:
        head = (f"## Fusion evaluation\n\n{self.n_images} held-out images; 95% intervals from "
                f"{self.n_bootstrap} bootstrap resamples of images (seed {self.seed}). Accuracy counts "
                "`unknown` as wrong; multi-valued attributes score the Jaccard overlap. Numbers in %.\n")
        shown = METRICS + ((RAW_ECE,) if self.calibrated else ())
        if self.calibrated:
            head += ("\nConfidences are calibrated (isotonic, per method and attribute, fitted on the "
                     "probe_calibration images); \"ECE before calibration\" is the same answers' raw ECE.\n")
        lines = [head, "### Overall\n", "| method | accuracy | macro-F1 | coverage | selective accuracy | ECE |"
                 + (" ECE before calibration |" if self.calibrated else ""), "|" + "---|" * (len(shown) + 1)]
        for m in self.methods:
            r = self.results[(m, OVERALL)]
            lines.append(f"| {m} | " + " | ".join(r[k].as_points() for k in shown) + " |")
        claim = self.policy_claim()
        if claim:
            lines += ["", f"**{claim}.**"]
        lines += ["", "### Accuracy per attribute\n",
                  "| method | " + " | ".join(f"{a} (n={self.n_items[a]})" for a in self.attributes) + " |",
                  "|---|" + "---|" * len(self.attributes)]
        for m in self.methods:
            lines.append(f"| {m} | " + " | ".join(self.results[(m, a)]["accuracy"].as_points() for a in self.attributes) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | Path) -> Path:
        """Long format: method, attribute, metric, value, ci_low, ci_high, n_items."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["method", "attribute", "metric", "value", "ci_low", "ci_high", "n_items"])
            for (method, attribute), metrics in self.results.items():
                n = sum(self.n_items.values()) if attribute == OVERALL else self.n_items[attribute]
                for name, iv in metrics.items():
                    out.writerow([method, attribute, name, f"{iv.value:.6g}", f"{iv.low:.6g}", f"{iv.high:.6g}", n])
        return path

    def reliability_plot(self, path: str | Path, methods: Sequence[str] | None = None) -> Path:
        """Reliability diagram (accuracy against confidence, overall) as a PNG; no global backend change.

        By default it shows the sources, the best fixed strategy and the policy (all methods
        make an unreadable plot)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=(6, 5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        if methods is None:
            methods = [m for m in self.methods if m in SOURCES or m == LEARNED_POLICY or m == self.best_fixed()]
        for m in methods:
            n, conf, score = self.reliability[m]
            keep = n > 0
            if keep.any():
                ax.plot(conf[keep] / n[keep], score[keep] / n[keep], marker="o",
                        label=f"{m} (ECE {100 * self.metric(m, OVERALL, 'ece').value:.1f})")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy (answered items)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small", loc="upper left")
        ax.set_title("Reliability, held-out")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
        return path


def _image_resamples(n_images: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's image weights, (chunk, n_images) at a time: how often each image is drawn
    when `n_images` images are resampled with replacement. Every number of one evaluation, and
    `compare_runs`, resamples with these, so the same seed gives the same draws."""
    if n_images <= 0 or n_bootstrap <= 0:
        return
    rng = np.random.default_rng(seed)
    uniform = np.full(n_images, 1.0 / n_images)
    for start in range(0, n_bootstrap, 100):
        yield rng.multinomial(n_images, uniform, size=min(100, n_bootstrap - start)).astype(np.float64)


def _predict(example: EvalExample, attribute, method: str, thresholds: Thresholds,
             choosers: Mapping[str, StrategyChooser]) -> AttributeEstimate:
    sources = example.attribute_sources(attribute.key)
    if method in SOURCES:
        answer = clean_estimate(attribute, sources.get(method), method)
        if answer is None:
            return AttributeEstimate(attribute.key)
        return AttributeEstimate(attribute.key, answer.values, answer.confidence, (method,), answer.scores)
    strategy = choosers[method].choose_for(attribute, sources, example.context) if method in choosers else method
    return fuse_attribute(attribute, sources, strategy, thresholds, example.context)


def labelled_predictions(example: EvalExample, vocabulary: Vocabulary, methods: Sequence[str], thresholds: Thresholds,
                         choosers: Mapping[str, StrategyChooser]) -> Iterator[tuple]:
    """(attribute, label, method, prediction) for every labelled attribute of `example` the vocabulary
    knows, and every method: the items that the evaluation and the calibration both score."""
    for key, label in example.labels.items():
        if key not in vocabulary.keys or not label:
            continue
        attribute = vocabulary.attribute(key)
        for method in methods:
            yield attribute, tuple(label), method, _predict(example, attribute, method, thresholds, choosers)


def evaluate(examples: Iterable[EvalExample], vocabulary: Vocabulary, policy: StrategyChooser | None = None,
             strategies: Sequence[str] = ALL_STRATEGIES, thresholds: Thresholds = Thresholds(),
             sources: Sequence[str] = SOURCES, choosers: Mapping[str, StrategyChooser] | None = None,
             n_bootstrap: int = 1000, seed: int = 0, calibration=None, keep_items: Sequence[str] = ()) -> EvalReport:
    """Score every source alone, every strategy and the policy on labelled held-out examples.

    `calibration` (a `calibration.ConfidenceCalibration`) maps each method's confidences first;
    the report then also has `RAW_ECE`, the ECE of the confidences before that map.
    `keep_items` names the methods whose per-item scores the report keeps (with the image ids),
    so that `compare_runs` can pair them with another run's.

    `choosers` adds further named strategy choosers (e.g. a random-strategy baseline). Labels of
    attributes the vocabulary does not know are ignored; examples are read once (streaming).
    """
    for s in strategies:
        check_strategy(s)
    named = dict(choosers or {})
    if policy is not None:
        named[LEARNED_POLICY] = policy
    methods = tuple(sources) + tuple(strategies) + tuple(named)
    logs: dict[tuple[str, str], _ItemLog] = defaultdict(_ItemLog)
    n_images = 0
    image_ids: list[str] = []
    for example in examples:
        image = n_images
        n_images += 1
        if keep_items:
            image_ids.append(example.image_id)
        for attribute, label, method, predicted in labelled_predictions(example, vocabulary, methods, thresholds,
                                                                        named):
            raw = predicted.confidence
            if calibration is not None:
                predicted = calibration.apply(method, predicted)
            logs[(method, attribute.key)].add(image, predicted, label, attribute.multi, raw)
    attributes = tuple(k for k in vocabulary.keys if (methods[0], k) in logs) if methods else ()
    compiled = {k: _Compiled(log) for k, log in logs.items()}
    n_items = {a: compiled[(methods[0], a)].size for a in attributes}

    def all_metrics(weights: np.ndarray) -> dict[tuple[str, str], dict[str, np.ndarray]]:
        b = weights.shape[0]
        out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for m in methods:
            per_attr = [compiled[(m, a)].sums(weights) for a in attributes]
            for a, sums in zip(attributes, per_attr):
                out[(m, a)] = _metrics(sums)
            pooled = {k: sum((s[k] for s in per_attr), np.zeros(b)) for k in ("n", "score", "answered")}
            for gap in ("bin_gap", "raw_bin_gap"):
                pooled[gap] = sum((s[gap] for s in per_attr), np.zeros((b, N_BINS)))
            pooled["macro_f1"] = (_nanmean_rows(np.stack([s["macro_f1"] for s in per_attr], axis=1))
                                  if per_attr else np.full(b, np.nan))
            out[(m, OVERALL)] = _metrics(pooled)
        return out

    point = all_metrics(np.ones((1, max(n_images, 1))))
    replicates: dict[tuple[str, str], dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for weights in _image_resamples(n_images, n_bootstrap, seed):
        chunk = all_metrics(weights)
        for key, metrics in chunk.items():
            for name, values in metrics.items():
                replicates[key][name].append(values)
    reps = {key: {name: np.concatenate(v) for name, v in metrics.items()} for key, metrics in replicates.items()}

    results: dict[tuple[str, str], dict[str, Interval]] = {}
    reported = METRICS + ((RAW_ECE,) if calibration is not None else ())
    for key, metrics in point.items():
        results[key] = {}
        for name in reported:
            value = float(metrics[name][0])
            r = reps.get(key, {}).get(name, np.array([]))
            r = r[~np.isnan(r)]
            lo, hi = (np.percentile(r, [2.5, 97.5]) if r.size else (np.nan, np.nan))
            results[key][name] = Interval(value, float(lo), float(hi))

    reliability = {}
    for m in methods:
        counts = np.zeros(N_BINS)
        conf = np.zeros(N_BINS)
        score = np.zeros(N_BINS)
        for a in attributes:
            for k, (idx, c, s) in enumerate(compiled[(m, a)].bins):
                counts[k] += idx.size
                conf[k] += c.sum()
                score[k] += s.sum()
        reliability[m] = np.stack([counts, conf, score])
    item_scores = {(m, a): (compiled[(m, a)].image, compiled[(m, a)].score)
                   for m in keep_items if m in methods for a in attributes}
    return EvalReport(methods=methods, attributes=attributes, n_images=n_images, n_items=n_items, results=results,
                      n_bootstrap=n_bootstrap if n_images else 0, seed=seed, reliability=reliability,
                      image_ids=tuple(image_ids), item_scores=item_scores, _replicates=reps)


def _items(report: EvalReport, method: str, attribute: str) -> tuple[dict[tuple[str, str, int], tuple[int, int]],
                                                                     np.ndarray]:
    """One run's items of `method`, all attributes pooled for OVERALL: (image id, attribute,
    occurrence) -> (position in the scores, image position in the run), and the scores. The
    occurrence number tells apart the items of an image that a source holds twice."""
    attributes = report.attributes if attribute == OVERALL else (attribute,)
    keys: dict[tuple[str, str, int], tuple[int, int]] = {}
    seen: dict[tuple[str, str], int] = defaultdict(int)
    scores = []
    for a in attributes:
        if (method, a) not in report.item_scores:
            raise ValueError(f"The run kept no per-item scores of {method} on {a} (evaluate(keep_items=...)).")
        images, score = report.item_scores[(method, a)]
        for i in images.tolist():
            item = (report.image_ids[i], a)
            keys[(*item, seen[item])] = (len(keys), i)
            seen[item] += 1
        scores.append(score)
    return keys, np.concatenate(scores) if scores else np.zeros(0)


def compare_runs(a: EvalReport, b: EvalReport, method: str, attribute: str = OVERALL, *,
                 names: tuple[str, str] = ("a", "b")) -> Comparison:
    """Paired-bootstrap difference of `method`'s accuracy between two runs (e.g. two inference
    paths) over the same (image, attribute) items: accuracy in `a` minus accuracy in `b`, 95% CI.

    Items are matched by image id and attribute, never by position, and must be the same set in
    both runs (else ValueError). Images are resampled as `evaluate` resamples them (run `a`'s
    seed and number of resamples), and each replicate is the mean per-item difference over the
    drawn images' items, so a run against itself gives exactly 0 with a zero-width interval."""
    keys_a, score_a = _items(a, method, attribute)
    keys_b, score_b = _items(b, method, attribute)
    if keys_a.keys() != keys_b.keys():
        only_a, only_b = len(keys_a.keys() - keys_b.keys()), len(keys_b.keys() - keys_a.keys())
        raise ValueError(f"The two runs did not score the same items of {method} on {attribute} "
                         f"({only_a} only in the first, {only_b} only in the second).")
    # keys_a is in the order of score_a; b's scores are looked up item by item.
    images = np.asarray([image for _position, image in keys_a.values()], dtype=np.int64)
    diff = score_a - score_b[np.asarray([keys_b[k][0] for k in keys_a], dtype=np.int64)]
    margin = float(diff.mean()) if diff.size else float("nan")
    replicates = []
    for weights in _image_resamples(a.n_images, a.n_bootstrap, a.seed):
        w = weights[:, images]
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates.append((w @ diff) / w.sum(1))
    reps = np.concatenate(replicates) if replicates else np.zeros(0)
    reps = reps[~np.isnan(reps)]
    lo, hi = (np.percentile(reps, [2.5, 97.5]) if reps.size else (np.nan, np.nan))
    return Comparison(names[0], names[1], "accuracy", attribute, margin, float(lo), float(hi))
