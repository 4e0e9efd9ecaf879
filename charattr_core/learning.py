"""The learning stages' plumbing, shared by `charattr eval` and the Dagster assets.

`Signals` is what the per-shard stages found for one image (its record, tag parse and
embedding). From streams of signal batches this module derives the visual sources (zero-shot
CLIP and the probes, vectorised per batch), probe training batches and labelled examples for
the fusion policy, each restricted to its split (`splits.py`) so that nothing leaks.

`learn_and_evaluate` scores, on the held-out images, every source alone, every fixed strategy,
the learned policy and a random-strategy baseline (`RANDOM_BASELINE`: a seeded uniform pick per
image and attribute), so the report shows the policy against "choosing without looking" as well
as against the best fixed rule. `docs/fusion-evidence.md` has the numbers on the synthetic sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .evaluation import EvalExample
from .fusion import FusionContext
from .policy_labels import build_example
from .probes import ProbeBatch
from .records import AttributeEstimate, ImageRecord, TagParse
from .schema import Vocabulary
from .splits import split_of

RANDOM_BASELINE = "random_strategy"  # the method name of the random-strategy baseline in the report
Scorer = Callable[[np.ndarray], list[dict[str, AttributeEstimate]]]
Estimates = dict[str, dict[str, AttributeEstimate]]  # image_id -> attribute -> estimate


@dataclass
class Signals:
    """One usable image with what the per-shard stages found for it."""

    record: ImageRecord
    tag_parse: TagParse | None
    embedding: np.ndarray | None  # float16, unit length; None when missing or failed


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


@dataclass
class LearningResult:
    """What `learn_and_evaluate` produced: trained probes (or None), the policy and the report."""

    probes: object | None
    policy: object
    report: object  # evaluation.EvalReport
    probe_skip_reason: str | None = None
    calibration: object | None = None  # calibration.ConfidenceCalibration fitted on `probe_calibration`


def learn_and_evaluate(signal_batches: Sequence[Sequence[Signals]], vocabulary: Vocabulary, *,
                       model_key: str | None, scorer: Scorer | None,
                       user_labels: Mapping[str, Mapping[str, tuple[str, ...]]], thresholds,
                       previous_policy=None, n_bootstrap: int = 1000, seed: int = 0,
                       calibrate: bool = True) -> LearningResult:
    """Probes on their split, the policy on `policy_train`, every method scored on `holdout`.

    `signal_batches` must be re-iterable (probe training makes several passes). The report
    includes the random-strategy baseline (`RANDOM_BASELINE`, seeded with `seed`).
    """
    from .evaluation import evaluate
    from .policy import RandomStrategyChooser, train_policy
    from .probes import train_probes
    from .splits import is_probe_train

    probes, skip = None, None
    if model_key is None:
        skip = "no CLIP embeddings"
    else:
        trained = train_probes(lambda: probe_batches(signal_batches, is_probe_train), vocabulary, model_key,
                               accept=thresholds.accept, seed=seed)
        probes = trained if trained.heads else None
        skip = None if probes else "no attribute had enough confident tags to train a probe"
    policy = train_policy(iter_examples(signal_batches, "policy_train", vocabulary, scorer, probes, user_labels,
                                        thresholds.accept),
                          vocabulary, previous=previous_policy, thresholds=thresholds, model_key=model_key)
    choosers = {RANDOM_BASELINE: RandomStrategyChooser(seed=seed)}
    calibration = None
    if calibrate:  # confidences mapped to probabilities on images no other stage learned from
        from .calibration import fit_calibration
        calibration = fit_calibration(iter_examples(signal_batches, "probe_calibration", vocabulary, scorer, probes,
                                                    user_labels, thresholds.accept),
                                      vocabulary, policy=policy, thresholds=thresholds,
                                      choosers={RANDOM_BASELINE: RandomStrategyChooser(seed=seed)})  # its own draws
    holdout = list(iter_examples(signal_batches, "holdout", vocabulary, scorer, probes, user_labels,
                                 thresholds.accept))
    report = evaluate(holdout, vocabulary, policy=policy, thresholds=thresholds, choosers=choosers,
                      n_bootstrap=n_bootstrap, seed=seed, calibration=calibration)
    return LearningResult(probes=probes, policy=policy, report=report, probe_skip_reason=skip, calibration=calibration)
