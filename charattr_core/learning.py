"""The stages that learn, implemented once: `charattr eval` and the Dagster assets
`attribute_probes` / `fusion_policy` call these functions and nothing else to split, train, judge
and evaluate.

`Signals` is what the per-shard stages found for one image (its record, tag parse and
embedding). A caller hands in a `SignalSource`: a function that starts a fresh, streamed pass over
the signal batches of the images for which `keep(image_id)` holds (the warehouse's shards for
the assets, a temporary spill of one source for `charattr eval`). Which images may teach which
stage is decided here, from `splits.py`, and nowhere else:

- `train_split_probes`: the probes on `probe_fit` + `probe_calibration`;
- `train_and_judge_policy`: the policy on `policy_train` (warm-started from the published policy
  when `plan_warm_start` allows it), its confidence calibration on `probe_calibration` (kept in
  the policy, see `calibration.py`), every method scored on `holdout` only — every source alone,
  every fixed strategy, the candidate, the published policy (`CURRENT_POLICY`) and a random-strategy
  baseline (`RANDOM_BASELINE`: a seeded uniform pick per image and attribute) — and the
  publication gate (`policy_gate.judge_candidate`) applied to that evaluation;
- `learn_and_evaluate`: both, on one source (`charattr eval`).

A source only filters early (it may skip decoding what `keep` rejects); the functions here filter
again, so a source that ignores `keep` cannot leak an image into the wrong split.
`docs/fusion-evidence.md` has the numbers on the synthetic sample.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .evaluation import EvalExample, EvalReport, evaluate
from .fusion import FusionContext, Thresholds
from .policy import FusionPolicy, RandomStrategyChooser, train_policy
from .policy_gate import CURRENT_POLICY, PolicyVerdict, judge_candidate
from .policy_labels import build_example
from .probes import AttributeProbes, ProbeBatch, train_probes
from .records import AttributeEstimate, ImageRecord, TagParse
from .schema import Vocabulary
from .splits import HOLDOUT, POLICY_TRAIN, PROBE_CALIBRATION, is_probe_train, split_of

RANDOM_BASELINE = "random_strategy"  # the method name of the random-strategy baseline in the report
Scorer = Callable[[np.ndarray], list[dict[str, AttributeEstimate]]]
Estimates = dict[str, dict[str, AttributeEstimate]]  # image_id -> attribute -> estimate
Labels = Mapping[str, Mapping[str, tuple[str, ...]]]  # image_id -> attribute -> values


@dataclass(slots=True)
class Signals:
    """One usable image with what the per-shard stages found for it."""

    record: ImageRecord
    tag_parse: TagParse | None
    embedding: np.ndarray | None  # float16, unit length; None when missing or failed


# A fresh streamed pass over signal batches, of (at least) the images for which keep(image_id) holds.
SignalSource = Callable[[Callable[[str], bool]], Iterable[Sequence[Signals]]]


def in_split(split: str) -> Callable[[str], bool]:
    """`keep` for one split of `splits.py`."""
    return lambda image_id: split_of(image_id) == split


def visual_estimates(image_ids: Sequence[str], embeddings: Sequence[np.ndarray | None],
                     scorer: Scorer | None, probes) -> tuple[Estimates, Estimates]:
    """Zero-shot and probe estimates for the images that have an embedding, one matrix product each."""
    present = [(i, e) for i, e in zip(image_ids, embeddings) if e is not None]
    if not present or (scorer is None and probes is None):
        return {}, {}
    ids = [i for i, _e in present]
    matrix = np.stack([np.asarray(e, dtype=np.float32) for _i, e in present])
    clip_est = dict(zip(ids, scorer(matrix))) if scorer is not None else {}
    probe_est = dict(zip(ids, probes.predict(matrix))) if probes is not None else {}
    return clip_est, probe_est


def probe_batches(signal_batches: Iterable[Sequence[Signals]], keep: Callable[[str], bool]) -> Iterator[ProbeBatch]:
    """Training batches for `probes.train_probes`: images of the kept split that have an embedding."""
    for batch in signal_batches:
        usable = [s for s in batch if s.embedding is not None and s.tag_parse is not None and keep(s.record.image_id)]
        if usable:
            yield ProbeBatch([s.record.image_id for s in usable],
                             np.stack([s.embedding for s in usable]).astype(np.float32),
                             [s.tag_parse for s in usable])


def iter_examples(signal_batches: Iterable[Sequence[Signals]], split: str, vocabulary: Vocabulary,
                  scorer: Scorer | None, probes, user_labels: Mapping[str, Mapping[str, tuple[str, ...]]],
                  accept: float) -> Iterator[EvalExample]:
    """Labelled examples of one split (`policy_train` or `holdout`), streamed."""
    for batch in signal_batches:
        batch = [s for s in batch if split_of(s.record.image_id) == split]
        clip_est, probe_est = visual_estimates([s.record.image_id for s in batch], [s.embedding for s in batch],
                                               scorer, probes)
        for s in batch:
            image_id = s.record.image_id
            example = build_example(
                image_id, {"tags": s.tag_parse, "clip": clip_est.get(image_id), "probe": probe_est.get(image_id)},
                vocabulary, FusionContext.from_records(s.tag_parse, s.record), user_labels.get(image_id), accept)
            if example is not None:
                yield example



# ---- probes ---------------------------------------------------------------------------------------

def train_split_probes(signals: SignalSource, vocabulary: Vocabulary, model_key: str, *, accept: float,
                       seed: int = 0) -> AttributeProbes:
    """The probes, fitted and calibrated on their own buckets (`splits.is_probe_train`) only.

    `signals` is called once per pass (`epochs + 2` passes, see `probes.train_probes`)."""
    return train_probes(lambda: probe_batches(signals(is_probe_train), is_probe_train), vocabulary, model_key,
                        accept=accept, seed=seed)


def probe_skip_reason(model_key: str | None, probes: AttributeProbes | None) -> str | None:
    """Why there are no usable probes, or None when at least one attribute has one."""
    if model_key is None:
        return "no CLIP embeddings"
    if probes is None or not probes.heads:
        return "no attribute had enough confident tags to train a probe"
    return None


# ---- the policy: warm start, training, held-out evaluation, publication gate ------------------------

def policy_signature(*, model_key: str | None, probes: AttributeProbes | None, thresholds: Thresholds,
                     labels: str | None, default_strategy: str) -> dict[str, Any]:
    """Everything the policy's statistics were learnt under; a change means retraining from scratch."""
    return {"model": model_key, "probes": probes.probes_version if probes else None,
            "thresholds": [thresholds.accept, thresholds.low], "labels": labels,
            "default_strategy": default_strategy}


@dataclass(frozen=True)
class WarmStart:
    """Whether to keep adding to the published policy's statistics, and the parts still to learn from."""

    warm: bool
    new_parts: tuple[str, ...]


def plan_warm_start(state: Mapping[str, Any] | None, signature: Mapping[str, Any], stamps: Mapping[str, str],
                    has_current: bool) -> WarmStart:
    """Online learning over parts (shards) with content stamps: the saved statistics are exact sums,
    so they are kept when a policy is published, it was learnt under the same `signature`, and no
    part it learnt from changed (same stamp); then only parts it has not seen are added.
    Otherwise the policy is retrained on every part. `state` is what `training_state` returned
    when the published policy was saved."""
    state = state or {}
    seen = state.get("shards", {})  # the key the asset has always written
    warm = (has_current and state.get("signature") == dict(signature)
            and all(stamps.get(part) == stamp for part, stamp in seen.items()))
    return WarmStart(warm, tuple(p for p in stamps if p not in seen) if warm else tuple(stamps))


def training_state(signature: Mapping[str, Any], stamps: Mapping[str, str]) -> dict[str, Any]:
    """What `plan_warm_start` needs next time, saved beside a published policy."""
    return {"signature": dict(signature), "shards": dict(stamps)}


@dataclass
class PolicyOutcome:
    """The candidate policy, its held-out evaluation and the publication verdict on it."""

    candidate: FusionPolicy
    report: EvalReport
    verdict: PolicyVerdict
    calibration: object | None = None  # calibration.ConfidenceCalibration, when asked for


def train_and_judge_policy(training: SignalSource, holdout: SignalSource, vocabulary: Vocabulary, *,
                           model_key: str | None, scorer: Scorer | None, probes: AttributeProbes | None,
                           user_labels: Labels,
                           thresholds: Thresholds, default_strategy: str, current: FusionPolicy | None = None,
                           warm_start: bool = False, n_bootstrap: int = 1000, seed: int = 0,
                           max_eval_images: int | None = None, calibrate: bool = True,
                           keep_items: Sequence[str] = ()) -> PolicyOutcome:
    """Train a candidate on `policy_train` images of `training`, score it on `holdout` images of
    `holdout` next to every source, fixed strategy, the random baseline and `current` (the published
    policy, if any), and judge whether it may replace `current`.

    With `warm_start` the candidate starts from a copy of `current`'s statistics (`current` itself is
    left as it is: it is scored beside the candidate). At most `max_eval_images` held-out images
    are scored (their per-item results are what the bootstrap keeps in memory).

    With `calibrate` (the default), every method's confidences are calibrated on the
    `probe_calibration` images of `holdout` (every part: the maps are not sums, so they are refitted
    in full even on a warm start), the evaluation reports calibrated ECE next to the raw one
    (`raw_ece`), and the candidate keeps the maps production fusion applies (the sources' and
    `learned_policy`'s) as `candidate.calibration`. The labels are those the policy learns from:
    user corrections where given, else confident tags hidden from the sources (`policy_labels.py`),
    so with self-supervision the tags source of a labelled attribute never answers and the tags'
    own map can only come from corrections. Too few items for any map, or `calibrate=False`: the
    candidate has no calibration and fuses with raw confidences.
    `keep_items`: the methods whose per-item scores the report keeps (`evaluation.compare_runs`)."""
    if warm_start and current is None:
        raise ValueError("A warm start needs the published policy to start from.")
    previous = copy.deepcopy(current, {id(vocabulary): vocabulary}) if warm_start else None
    candidate = train_policy(
        iter_examples(training(in_split(POLICY_TRAIN)), POLICY_TRAIN, vocabulary, scorer, probes, user_labels,
                      thresholds.accept),
        vocabulary, previous=previous, thresholds=thresholds, default_strategy=default_strategy, model_key=model_key)
    choosers: dict[str, Any] = {RANDOM_BASELINE: RandomStrategyChooser(seed=seed)}
    if current is not None:
        choosers[CURRENT_POLICY] = current
    calibration = None
    candidate.calibration = None  # a warm start's copy must not keep the published policy's maps
    if calibrate:  # confidences mapped to probabilities on images no other stage learned from
        from .calibration import PRODUCTION_METHODS, fit_calibration
        calibration_choosers = {**choosers, RANDOM_BASELINE: RandomStrategyChooser(seed=seed)}  # its own draws
        calibration = fit_calibration(
            iter_examples(holdout(in_split(PROBE_CALIBRATION)), PROBE_CALIBRATION, vocabulary, scorer, probes,
                          user_labels, thresholds.accept),
            vocabulary, policy=candidate, thresholds=thresholds, choosers=calibration_choosers)
        kept = calibration.restricted(PRODUCTION_METHODS)
        candidate.calibration = kept if kept.maps else None
    examples = iter_examples(holdout(in_split(HOLDOUT)), HOLDOUT, vocabulary, scorer, probes, user_labels,
                             thresholds.accept)
    report = evaluate(itertools.islice(examples, max_eval_images), vocabulary, policy=candidate,
                      thresholds=thresholds, choosers=choosers, n_bootstrap=n_bootstrap, seed=seed,
                      calibration=calibration, keep_items=keep_items)
    verdict = judge_candidate(report, has_current=current is not None)
    return PolicyOutcome(candidate, report, verdict, calibration)


# ---- both, on one source (`charattr eval`) ------------------------------------------------------------

@dataclass
class LearningResult:
    """What `learn_and_evaluate` produced: trained probes (or None), the policy, its evaluation and verdict."""

    probes: AttributeProbes | None
    policy: FusionPolicy
    report: EvalReport
    verdict: PolicyVerdict
    probe_skip_reason: str | None = None
    calibration: object | None = None  # calibration.ConfidenceCalibration fitted on `probe_calibration`


def learn_and_evaluate(signals: SignalSource, vocabulary: Vocabulary, *, model_key: str | None,
                       scorer: Scorer | None, user_labels: Labels, thresholds: Thresholds,
                       default_strategy: str = "confidence_weighted", n_bootstrap: int = 1000, seed: int = 0,
                       max_eval_images: int | None = None, calibrate: bool = True,
                       keep_items: Sequence[str] = ()) -> LearningResult:
    """Probes on their split, the policy on `policy_train`, every method scored on `holdout`: the
    same functions, in the same order, as the `attribute_probes` and `fusion_policy` assets
    (plus, with `calibrate`, confidences calibrated on `probe_calibration`)."""
    probes = None
    if model_key is not None:
        trained = train_split_probes(signals, vocabulary, model_key, accept=thresholds.accept, seed=seed)
        probes = trained if trained.heads else None
    outcome = train_and_judge_policy(signals, signals, vocabulary, model_key=model_key, scorer=scorer, probes=probes,
                                     user_labels=user_labels, thresholds=thresholds,
                                     default_strategy=default_strategy, n_bootstrap=n_bootstrap, seed=seed,
                                     max_eval_images=max_eval_images, calibrate=calibrate,
                                     keep_items=keep_items)
    return LearningResult(probes=probes, policy=outcome.candidate, report=outcome.report, verdict=outcome.verdict,
                          probe_skip_reason=probe_skip_reason(model_key, probes), calibration=outcome.calibration)
