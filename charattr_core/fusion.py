"""Fusion: one answer per image and attribute from the tag parse, zero-shot CLIP and the probes.

Inputs, per image and attribute, are up to three `AttributeEstimate`s, keyed by source:
`"tags"` (the tag parser), `"clip"` (zero-shot CLIP) and `"probe"` (the linear heads of
`probes.py`). Any of them may be missing: an image without tags, a run without CLIP weights, an
attribute without a trained probe. An estimate whose answer is `unknown` counts as missing.

Two channels. Strategies weigh two channels, *tags* and *visual*. Visual is the probe when the
probe answered for this attribute, else zero-shot CLIP. They are not averaged together: both
read the same image embedding, so their errors are correlated, and averaging them would count
the image twice against the tags; where a probe exists it was fitted to this collection's
confident tags and calibrated, and it is the better of the two (the evaluation reports every
source alone, so this choice can be checked on held-out data).

Thresholds (`Thresholds(accept=0.8, low=0.3)`, from DESIGN): a confidence at or above `accept`
is taken as is; between `low` and `accept` it is cross-checked with the other channel; below
`low` a source is not trusted, and the strategy falls back to the other channel or answers
`unknown`. No strategy reports an answer whose final confidence is below `low`.

The strategies (`STRATEGIES`, a registry name -> function, so the learned policy picks by name):

- `conservative_clip`: visual when >= accept, else tags when >= low, else unknown.
- `aggressive_clip`: visual when >= low, else tags when >= low, else unknown.
- `tag_priority`: tags when >= accept; tags in [low, accept) are cross-checked with visual;
  below low, fall back to visual.
- `visual_priority`: the same with the channels swapped.
- `confidence_weighted`: the mean of both channels' score vectors, weighted by confidence.
- `uncertainty_aware`: trusted channels (>= low) that agree give the answer with raised
  confidence; when they disagree and neither is >= accept it abstains (`unknown`, evidence
  `abstain:disagreement`) so the image can be deferred to review.
- baselines: `tags_only` and `clip_only` (the visual channel alone, CLIP being the only image
  model: probe or zero-shot), each floored at `low`; `simple_average` (unweighted mean of the
  channels' scores).

Cross-checking. When two channels agree, the answer's confidence becomes
`ps / (ps + (1-p)(1-s)q)` and when they disagree the more confident one wins with
`w(1-l) / (w(1-l) + l(1-w) + (1-w)(1-l)(1-q))`: the posterior that the answer is right if
the two sources are right with probabilities p, s (w, l) independently and a wrong answer is
spread evenly over the other values (`q = 1/(K-1)`, the chance that two wrong answers coincide).
Tags and CLIP are not independent (the same features make both err), so agreement-raised
confidences are optimistic; the evaluation's calibration error (ECE) shows by how much.

Multi-valued attributes (hair colour, accessories, ...): scores are independent per-value
probabilities; the pooled answer is every value with probability >= 0.5 (else the single most
probable value, when it reaches `low`), and its confidence is the smallest probability among the
values it names ("how sure we are of the weakest value we assert"). Two multi-valued answers
*agree* when they name the same set.

Output. Every estimate's values are vocabulary values (a source's out-of-vocabulary values are
dropped), confidences lie in [0, 1], and `evidence` lists first the sources that support the
answer (names from `records.SOURCES`), then the evidence those sources gave (the tags that
matched, verbatim), then `conflict:<source>` for a consulted source that said otherwise.
`FusedAttributes.confidence` is the mean confidence over the attributes that are not `unknown`
(0.0 when all are): it says how sure the row's answers are, not how complete the row is.

Calibration. With a calibration (`calibration.py`; a published policy carries its own), each
answer's confidence is mapped to a probability after the strategy has answered, so the answers
are the same with or without it; the evidence then also keeps the raw confidence
(`raw_confidence:<x>`) and each consulted source's calibrated and raw one
(`confidence:<source>=<calibrated>,raw=<raw>`). Without one, confidences are as above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

from .config import ALL_STRATEGIES
from .errors import ConfigError
from .records import SOURCES, AttributeEstimate, FusedAttributes, ImageRecord, TagParse
from .schema import UNKNOWN, Attribute, Vocabulary

FUSION_CODE_VERSION = "1"
LEARNED_POLICY = "learned_policy"  # FusedAttributes.strategy when the policy chose per attribute
MULTI_VALUE_THRESHOLD = 0.5  # a multi-valued value is named when its probability reaches this
_EPS = 1e-6


@dataclass(frozen=True)
class Thresholds:
    """Confidence thresholds: >= accept is taken, [low, accept) cross-checked, < low not trusted."""

    accept: float = 0.8
    low: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.accept <= 1.0:
            raise ConfigError("Confidence thresholds must satisfy 0 <= low <= accept <= 1 "
                              f"(got low={self.low}, accept={self.accept}).")

    @classmethod
    def from_config(cls, config) -> "Thresholds":
        """From a `PipelineConfig` (confidence_threshold, low_confidence_threshold)."""
        return cls(accept=config.confidence_threshold, low=config.low_confidence_threshold)


@dataclass(frozen=True)
class FusionContext:
    """What is known about the image beyond the sources' answers; every field may be unknown."""

    tag_count: int | None = None
    character_count: int | None = None
    width: int | None = None
    height: int | None = None

    @classmethod
    def from_records(cls, tag_parse: TagParse | None = None, image: ImageRecord | None = None) -> "FusionContext":
        return cls(tag_count=tag_parse.tag_count if tag_parse else None,
                   character_count=tag_parse.character_count if tag_parse else None,
                   width=image.width if image else None, height=image.height if image else None)


@dataclass(frozen=True)
class SourceAnswer:
    """One source's answer, cleaned against the vocabulary: dense scores, confidence in [0, 1]."""

    source: str
    values: tuple[str, ...]
    confidence: float
    scores: dict[str, float]
    evidence: tuple[str, ...]

    def agrees(self, other: "SourceAnswer") -> bool:
        """Same top value (single-valued) or the same set of values (multi-valued)."""
        return set(self.values) == set(other.values)


def _finite_unit(x: object) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return min(1.0, max(0.0, v)) if math.isfinite(v) else 0.0


def clean_estimate(attribute: Attribute, estimate: AttributeEstimate | None, source: str) -> SourceAnswer | None:
    """The estimate as a `SourceAnswer`, or None when it gives no usable answer.

    Values outside the vocabulary are dropped; a single-valued attribute keeps its first value.
    Missing scores are rebuilt from the values and confidence; single-valued scores are made a
    distribution (mass a source did not assign is spread evenly over all values).
    """
    if estimate is None:
        return None
    names = attribute.value_names
    allowed = set(names)
    values = tuple(v for v in dict.fromkeys(estimate.values or ()) if v in allowed)
    if not values:
        return None
    if not attribute.multi:
        values = values[:1]
    confidence = _finite_unit(estimate.confidence)
    raw = {k: _finite_unit(v) for k, v in (estimate.scores or {}).items() if k in allowed}
    if not raw:
        raw = {v: confidence for v in values}
    scores = {n: raw.get(n, 0.0) for n in names}
    if not attribute.multi:
        total = sum(scores.values())
        if total > 1.0:
            scores = {n: s / total for n, s in scores.items()}
        elif total < 1.0:
            rest = (1.0 - total) / len(names)
            scores = {n: s + rest for n, s in scores.items()}
    evidence = tuple(str(e) for e in (estimate.evidence or ()) if str(e) not in SOURCES)
    return SourceAnswer(source, values, confidence, scores, evidence)


@dataclass(frozen=True)
class Channels:
    """The cleaned answers of one image and attribute: each source, and the two fusion channels."""

    tags: SourceAnswer | None = None
    clip: SourceAnswer | None = None
    probe: SourceAnswer | None = None

    @property
    def visual(self) -> SourceAnswer | None:
        """The probe when it answered, else zero-shot CLIP (see the module docstring for why)."""
        return self.probe if self.probe is not None else self.clip

    @classmethod
    def from_sources(cls, attribute: Attribute, sources: Mapping[str, AttributeEstimate]) -> "Channels":
        unknown = set(sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"Unknown fusion source(s) {sorted(unknown)}; sources are {', '.join(SOURCES)}.")
        return cls(**{s: clean_estimate(attribute, sources.get(s), s) for s in SOURCES})


def _coincidence(attribute: Attribute) -> float:
    """q: the chance that two wrong answers name the same value, if errors are spread evenly."""
    k = len(attribute.values)
    return 1.0 / (k - 1) if k > 1 else 1.0


def _clip_eps(x: float) -> float:
    return min(1.0 - _EPS, max(_EPS, x))


def agreement_confidence(p: float, s: float, q: float) -> float:
    """Posterior that two agreeing sources (right with p and s, independently) are right."""
    p, s = _clip_eps(p), _clip_eps(s)
    both_right = p * s
    return max(p, s, both_right / (both_right + (1 - p) * (1 - s) * q))


def disagreement_confidence(w: float, l: float, q: float) -> float:
    """Posterior that the more confident (w) of two disagreeing sources is right."""
    w, l = _clip_eps(w), _clip_eps(l)
    winner_right = w * (1 - l)
    return winner_right / (winner_right + l * (1 - w) + (1 - w) * (1 - l) * (1 - q))


def set_confidence(scores: Mapping[str, float], values: Sequence[str]) -> float:
    """Confidence of a multi-valued answer: the smallest probability among the values it names."""
    return min((scores.get(v, 0.0) for v in values), default=0.0)


def _unknown(attribute: Attribute, reason: str | None = None, considered: Sequence[SourceAnswer] = (),
             scores: Mapping[str, float] | None = None) -> AttributeEstimate:
    evidence = ((reason,) if reason else ()) + tuple(c.source for c in considered)
    return AttributeEstimate(attribute.key, (UNKNOWN,), 0.0, evidence, dict(scores or {}))


def _estimate(attribute: Attribute, values: Sequence[str], confidence: float, scores: Mapping[str, float],
              considered: Sequence[SourceAnswer], th: Thresholds) -> AttributeEstimate:
    """The fused estimate, with evidence, floored at `low` (an answer below it becomes unknown)."""
    confidence = _finite_unit(confidence)
    if not values or confidence < th.low:
        return _unknown(attribute, "abstain:low_confidence", considered, scores)
    answer = set(values)
    supporters = [c for c in considered if answer & set(c.values)]
    dissent = [c for c in considered if not answer & set(c.values)]
    evidence = tuple(c.source for c in supporters)
    evidence += tuple(dict.fromkeys(e for c in supporters for e in c.evidence))
    evidence += tuple(f"conflict:{c.source}" for c in dissent)
    ordered = tuple(v for v in attribute.value_names if v in answer)
    return AttributeEstimate(attribute.key, ordered, confidence, evidence, dict(scores))


def _take(attribute: Attribute, answer: SourceAnswer, th: Thresholds) -> AttributeEstimate:
    return _estimate(attribute, answer.values, answer.confidence, answer.scores, [answer], th)


def _first_trusted(attribute: Attribute, th: Thresholds,
                   *candidates: tuple[SourceAnswer | None, float]) -> AttributeEstimate:
    """The first candidate whose confidence reaches its own threshold, else unknown."""
    for answer, threshold in candidates:
        if answer is not None and answer.confidence >= threshold:
            return _take(attribute, answer, th)
    return _unknown(attribute)


def _cross_check(attribute: Attribute, primary: SourceAnswer, secondary: SourceAnswer | None,
                 th: Thresholds) -> AttributeEstimate:
    """Primary in [low, accept): agreement raises it, disagreement lets the more confident win."""
    if secondary is None:
        return _take(attribute, primary, th)
    q = _coincidence(attribute)
    if primary.agrees(secondary):
        conf = agreement_confidence(primary.confidence, secondary.confidence, q)
        return _estimate(attribute, primary.values, conf, primary.scores, [primary, secondary], th)
    winner, loser = (primary, secondary) if primary.confidence >= secondary.confidence else (secondary, primary)
    conf = disagreement_confidence(winner.confidence, loser.confidence, q)
    return _estimate(attribute, winner.values, conf, winner.scores, [winner, loser], th)


def _priority(attribute: Attribute, primary: SourceAnswer | None, secondary: SourceAnswer | None,
              th: Thresholds) -> AttributeEstimate:
    trusted_secondary = secondary if secondary is not None and secondary.confidence >= th.low else None
    if primary is not None and primary.confidence >= th.accept:
        return _take(attribute, primary, th)
    if primary is not None and primary.confidence >= th.low:
        return _cross_check(attribute, primary, trusted_secondary, th)
    if trusted_secondary is not None:
        return _take(attribute, trusted_secondary, th)
    return _unknown(attribute)


def _pool(attribute: Attribute, answers: Sequence[SourceAnswer], weights: Sequence[float],
          th: Thresholds) -> AttributeEstimate:
    """Weighted mean of the answers' score vectors, read out as an answer."""
    used = [(a, w) for a, w in zip(answers, weights) if w > 0]
    total = sum(w for _, w in used)
    if not used or total <= 0:
        return _unknown(attribute)
    names = attribute.value_names
    pooled = {n: sum(w * a.scores[n] for a, w in used) / total for n in names}
    best = max(names, key=lambda n: pooled[n])  # first in vocabulary order on ties
    if attribute.multi:
        values = [n for n in names if pooled[n] >= MULTI_VALUE_THRESHOLD] or [best]
        conf = set_confidence(pooled, values)
    else:
        values, conf = [best], pooled[best]
    return _estimate(attribute, values, conf, pooled, [a for a, _ in used], th)


Strategy = Callable[[Attribute, Channels, Thresholds, FusionContext], AttributeEstimate]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Add a strategy to the registry the fixed configuration and the learned policy choose from."""
    def wrap(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn
    return wrap


@register_strategy("conservative_clip")
def conservative_clip(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    return _first_trusted(attribute, th, (ch.visual, th.accept), (ch.tags, th.low))


@register_strategy("aggressive_clip")
def aggressive_clip(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    return _first_trusted(attribute, th, (ch.visual, th.low), (ch.tags, th.low))


@register_strategy("tag_priority")
def tag_priority(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    return _priority(attribute, ch.tags, ch.visual, th)


@register_strategy("visual_priority")
def visual_priority(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    return _priority(attribute, ch.visual, ch.tags, th)


@register_strategy("confidence_weighted")
def confidence_weighted(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    answers = [a for a in (ch.tags, ch.visual) if a is not None]
    return _pool(attribute, answers, [a.confidence for a in answers], th)


@register_strategy("uncertainty_aware")
def uncertainty_aware(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    trusted = [a for a in (ch.tags, ch.visual) if a is not None and a.confidence >= th.low]
    if not trusted:
        return _unknown(attribute)
    if len(trusted) == 1:
        return _take(attribute, trusted[0], th)
    tags, visual = trusted
    q = _coincidence(attribute)
    if tags.agrees(visual):
        stronger = tags if tags.confidence >= visual.confidence else visual
        conf = agreement_confidence(tags.confidence, visual.confidence, q)
        return _estimate(attribute, stronger.values, conf, stronger.scores, trusted, th)
    winner, loser = (tags, visual) if tags.confidence >= visual.confidence else (visual, tags)
    if winner.confidence < th.accept:
        return _unknown(attribute, "abstain:disagreement", trusted)
    conf = disagreement_confidence(winner.confidence, loser.confidence, q)
    return _estimate(attribute, winner.values, conf, winner.scores, [winner, loser], th)


@register_strategy("tags_only")
def tags_only(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    return _first_trusted(attribute, th, (ch.tags, th.low))


@register_strategy("clip_only")
def clip_only(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    return _first_trusted(attribute, th, (ch.visual, th.low))


@register_strategy("simple_average")
def simple_average(attribute: Attribute, ch: Channels, th: Thresholds, ctx: FusionContext) -> AttributeEstimate:
    answers = [a for a in (ch.tags, ch.visual) if a is not None]
    return _pool(attribute, answers, [1.0] * len(answers), th)


if not set(ALL_STRATEGIES) <= set(STRATEGIES):  # config.py names a strategy nobody implemented
    raise RuntimeError(f"Unregistered fusion strategies: {sorted(set(ALL_STRATEGIES) - set(STRATEGIES))}.")


def check_strategy(name: str) -> str:
    """The name, if it is a registered strategy; else a ConfigError listing the choices."""
    if name not in STRATEGIES:
        raise ConfigError(f"Unknown fusion strategy {name!r}; choose one of: {', '.join(STRATEGIES)}.")
    return name


class StrategyChooser(Protocol):
    """Anything that picks a strategy per image and attribute (the learned policy is one)."""

    def choose_for(self, attribute: Attribute, sources: Mapping[str, AttributeEstimate],
                   context: FusionContext) -> str: ...


class AnswerCalibration(Protocol):
    """Maps a fused answer's confidences to probabilities (`calibration.ConfidenceCalibration`)."""

    def calibrate_fused(self, method: str, attribute: Attribute, sources: Mapping[str, AttributeEstimate],
                        fused: AttributeEstimate) -> AttributeEstimate: ...


def fuse_attribute(attribute: Attribute, sources: Mapping[str, AttributeEstimate], strategy: str,
                   thresholds: Thresholds = Thresholds(), context: FusionContext | None = None) -> AttributeEstimate:
    """Fuse one attribute's source estimates (`{"tags": est, "clip": est, "probe": est}`, any subset)."""
    return fuse_channels(attribute, Channels.from_sources(attribute, sources), strategy, thresholds, context)


def fuse_channels(attribute: Attribute, channels: Channels, strategy: str, thresholds: Thresholds = Thresholds(),
                  context: FusionContext | None = None) -> AttributeEstimate:
    """`fuse_attribute` on already-cleaned sources (to run several strategies on one input)."""
    return STRATEGIES[check_strategy(strategy)](attribute, channels, thresholds, context or FusionContext())


SourcesArg = Mapping[str, "Mapping[str, AttributeEstimate] | TagParse"]


def _per_source(sources: SourcesArg) -> dict[str, Mapping[str, AttributeEstimate]]:
    out: dict[str, Mapping[str, AttributeEstimate]] = {}
    for name, estimates in sources.items():
        if name not in SOURCES:
            raise ValueError(f"Unknown fusion source {name!r}; sources are {', '.join(SOURCES)}.")
        if estimates is None:
            continue
        out[name] = estimates.estimates if isinstance(estimates, TagParse) else estimates
    return out


def fuse(image_id: str, sources: SourcesArg, vocabulary: Vocabulary, strategy: str = "confidence_weighted",
         thresholds: Thresholds = Thresholds(), context: FusionContext | None = None,
         policy: StrategyChooser | None = None, versions: Mapping[str, str] | None = None,
         source_uri: str | None = None, notes: Sequence[str] = (),
         calibration: AnswerCalibration | None = None) -> FusedAttributes:
    """One `fused_attributes` row: every vocabulary attribute, fused from the sources present.

    `sources` maps a source name to that source's estimates by attribute (a `TagParse` may stand
    for the tags; its tag and character counts then fill a missing `context`). With a `policy`
    the policy picks the strategy per attribute (`strategy` is then "learned_policy"); without
    one every attribute uses `strategy`. With a `calibration` each answer's confidence goes through
    the map of the method that produced it (`learned_policy` when the policy chose, else `strategy`).
    """
    check_strategy(strategy)
    tag_parse = sources.get("tags") if isinstance(sources.get("tags"), TagParse) else None
    ctx = context or FusionContext.from_records(tag_parse=tag_parse)  # type: ignore[arg-type]
    per_source = _per_source(sources)
    fused: dict[str, AttributeEstimate] = {}
    decided: dict[str, str] = {}
    for attribute in vocabulary.attributes:
        attr_sources = {s: est[attribute.key] for s, est in per_source.items() if attribute.key in est}
        chosen = strategy
        if policy is not None:
            chosen = policy.choose_for(attribute, attr_sources, ctx)
            if chosen not in STRATEGIES:
                raise ConfigError(f"The fusion policy chose {chosen!r}, which is not a registered strategy; "
                                  "retrain or replace the policy.")
        estimate = fuse_attribute(attribute, attr_sources, chosen, thresholds, ctx)
        if calibration is not None:
            estimate = calibration.calibrate_fused(LEARNED_POLICY if policy is not None else strategy, attribute,
                                                   attr_sources, estimate)
        fused[attribute.key] = estimate
        decided[attribute.key] = chosen
    answered = [e.confidence for e in fused.values() if not e.is_unknown]
    return FusedAttributes(
        image_id=image_id, attributes=fused, strategy=LEARNED_POLICY if policy is not None else strategy,
        strategies=decided, confidence=sum(answered) / len(answered) if answered else 0.0,
        versions=dict(versions or {}), source_uri=source_uri, notes=tuple(notes))

