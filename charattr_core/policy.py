"""The learned fusion policy: a contextual bandit that picks a fusion strategy per image and attribute.

"Contextual bandit" is the honest name for what is sometimes sold as a one-step DQN: there is no
sequence of decisions and no future reward, only "given this context, which action (strategy)
pays most". The method:

- Context (`policy_features`): per-source confidence (0 when absent), presence flags, whether the
  tags agree with the visual channel and the probe with zero-shot CLIP, log tag count, a
  several-characters flag, log image area (and whether the size is known), plus a bias term.
  One model per attribute, so the attribute's identity is in which model answers.
- Actions: the strategies of `fusion.STRATEGIES` (six fixed strategies and three baselines).
- Reward: `evaluation.answer_score` of the strategy's answer against the label (exact match, or
  Jaccard for multi-valued attributes; `unknown` earns 0) — the same number the evaluation reports.
- Labels: `policy_labels.py` (confident tags hidden from the sources, or user corrections).
- Model: per attribute and action a ridge regression of the reward on the context, kept as
  sufficient statistics `G = XᵀX` and `b = Xᵀr` (LinUCB's A and b, without the ridge term, which
  is added at solve time: θ = (G + λI)⁻¹ b). Training data is full-information — every strategy
  can be run offline on every labelled example — so each example updates every action. Sums
  are exact and order-free: `update()` on partitions one by one gives the same statistics as one
  batch, and a warm start is "load the previous statistics and keep adding".
- Choice: greedy, argmax θₐ·x; an optional UCB bonus `exploration * sqrt(xᵀ(G + λI)⁻¹x)` is
  there for rewards that arrive one chosen action at a time (`observe()`, e.g. live user
  feedback); with full-information training exploration buys nothing, so it defaults to 0.
  Ties, attributes without training data and a disabled policy fall back to `default_strategy`.

Versioning: the content hash of the statistics (and of the confidence calibration, when there
is one) identifies a trained state; `save()` bumps a generation counter when the state changed
and records the parent hash, so the asset's lineage is a chain of hashes. `fingerprint` covers
everything that decides the policy's fused rows (the statistics, the calibration and every
setting: default strategy, exploration, ridge, actions, thresholds, the CLIP model it was
trained for); it is what keys the fused rows made with the policy.

Calibration: `calibration` (a `calibration.ConfidenceCalibration`, or None) holds the isotonic
maps of the sources and of `learned_policy`, fitted on `probe_calibration` images for exactly
these statistics (`learning.train_and_judge_policy`); fusion maps its answers' confidences with
it. Any change to the statistics (`update`, `observe`) drops it, so a calibration is never used
with a policy it was not fitted for. A policy without one (not fitted, too few items, or saved by
an older charattr) fuses with raw confidences and says it is uncalibrated.

Validity: a policy learns from contexts that the CLIP model of its training run produced (the
clip and probe confidences), so it records that model's key (`model_key`, None for a run without
CLIP) and `unusable_reason(model_key)` refuses it for any other model.

Files: `policy.safetensors` (statistics) + `policy.json` (everything else, the calibration maps too);
no pickle. Rewards are computed with the policy's own thresholds (stored in the JSON); fusing
with other thresholds still works, but the policy's choices were learned for its own.

Honest limits: a linear reward model per action cannot represent every interaction between
features (it is a smooth, cheap, data-efficient choice, not the best possible one); the policy is
only as good as its labels (see `policy_labels.py` for what self-supervision can and cannot
teach); and it must be shown to beat the fixed strategies on held-out data per attribute
(`evaluation.evaluate(..., policy=...)`), not assumed to.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .artifacts import load_artifact, malformed_artifact, save_artifact
from .calibration import ConfidenceCalibration
from .config import ALL_STRATEGIES
from .errors import ArtifactMismatchError, ConfigError
from .evaluation import EvalExample, answer_score
from .fusion import Channels, FusionContext, Thresholds, check_strategy, fuse_channels
from .records import AttributeEstimate
from .schema import Attribute, Vocabulary

POLICY_CODE_VERSION = "1"
POLICY_FORMAT = "charattr-fusion-policy"
# The model of a policy saved before policies recorded it: matches no model, so it is never applied.
UNRECORDED_MODEL = "unrecorded (saved by an older charattr)"
FEATURES = (
    "bias", "tags_confidence", "clip_confidence", "probe_confidence",
    "tags_present", "clip_present", "probe_present", "tags_visual_agree", "clip_probe_agree",
    "log_tag_count", "multi_character", "log_area", "size_known",
)
_TIE = 1e-9


def policy_features(attribute: Attribute, sources: Mapping[str, AttributeEstimate],
                    context: FusionContext | None) -> np.ndarray:
    """The context vector (`FEATURES` order) of one image and attribute."""
    return _features(Channels.from_sources(attribute, sources), context)


def _features(ch: Channels, context: FusionContext | None) -> np.ndarray:
    ctx = context or FusionContext()
    visual = ch.visual

    def agree(a, b) -> float:
        return float(a is not None and b is not None and a.agrees(b))

    area = (ctx.width or 0) * (ctx.height or 0)
    return np.array([
        1.0,
        ch.tags.confidence if ch.tags else 0.0,
        ch.clip.confidence if ch.clip else 0.0,
        ch.probe.confidence if ch.probe else 0.0,
        float(ch.tags is not None), float(ch.clip is not None), float(ch.probe is not None),
        agree(ch.tags, visual), agree(ch.clip, ch.probe),
        math.log1p(max(ctx.tag_count or 0, 0)) / math.log(100.0),  # ~1 at 100 tags
        float((ctx.character_count or 0) > 1),
        math.log(area) / math.log(1e6) if area > 0 else 0.0,  # ~1 at a megapixel
        float(area > 0),
    ], dtype=np.float64)


class FusionPolicy:
    """Per-attribute, per-strategy ridge reward models; picks the strategy with the best prediction."""

    def __init__(self, vocabulary: Vocabulary, thresholds: Thresholds = Thresholds(), ridge: float = 1.0,
                 exploration: float = 0.0, default_strategy: str = "confidence_weighted",
                 actions: Sequence[str] = ALL_STRATEGIES, model_key: str | None = None) -> None:
        if ridge <= 0 or exploration < 0:
            raise ConfigError("The policy's ridge must be positive and its exploration bonus non-negative.")
        self.vocabulary = vocabulary
        self.thresholds = thresholds
        self.model_key = model_key  # the CLIP model whose embeddings made the training contexts
        self.ridge = float(ridge)
        self.exploration = float(exploration)
        self.actions = tuple(check_strategy(a) for a in actions)
        self.default_strategy = check_strategy(default_strategy)
        if self.default_strategy not in self.actions:
            raise ConfigError(f"The policy's default strategy {default_strategy!r} must be one of its actions.")
        d, k = len(FEATURES), len(self.actions)
        self.gram = {a.key: np.zeros((k, d, d)) for a in vocabulary.attributes}  # XᵀX per action
        self.b = {a.key: np.zeros((k, d)) for a in vocabulary.attributes}  # Xᵀr per action
        self.counts = {a.key: np.zeros(k, dtype=np.int64) for a in vocabulary.attributes}
        self.calibration: ConfidenceCalibration | None = None  # fitted for these statistics only
        self.generation = 0
        self.parent_hash: str | None = None
        self._saved_hash: str | None = None
        self._solved: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ---- learning ----------------------------------------------------------------------------
    def update(self, examples: Iterable[EvalExample]) -> int:
        """Add labelled examples (full information: every action is scored); returns items added."""
        added = 0
        for example in examples:
            for key, label in example.labels.items():
                if key not in self.gram or not label:
                    continue
                attribute = self.vocabulary.attribute(key)
                channels = Channels.from_sources(attribute, example.attribute_sources(key))
                x = _features(channels, example.context)
                rewards = np.array([answer_score(fuse_channels(attribute, channels, a, self.thresholds,
                                                               example.context).values, label, attribute.multi)
                                    for a in self.actions])
                self.gram[key] += np.outer(x, x)[None, :, :]
                self.b[key] += rewards[:, None] * x[None, :]
                self.counts[key] += 1
                self._solved.pop(key, None)
                added += 1
        if added:
            self.calibration = None  # fitted for the statistics that just changed
        return added

    def observe(self, attribute: str, features: np.ndarray, action: str, reward: float) -> None:
        """Add one bandit observation: the reward of the action that was actually taken."""
        i = self.actions.index(action)
        x = np.asarray(features, dtype=np.float64)
        self.gram[attribute][i] += np.outer(x, x)
        self.b[attribute][i] += float(reward) * x
        self.counts[attribute][i] += 1
        self._solved.pop(attribute, None)
        self.calibration = None  # fitted for the statistics that just changed

    # ---- choosing ----------------------------------------------------------------------------
    def _solve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """θ per action and (G + λI)⁻¹ per action, cached until the next update."""
        if key not in self._solved:
            reg = self.gram[key] + self.ridge * np.eye(len(FEATURES))[None, :, :]
            inv = np.linalg.inv(reg)
            self._solved[key] = (np.einsum("kij,kj->ki", inv, self.b[key]), inv)
        return self._solved[key]

    def predicted_rewards(self, attribute: str, features: np.ndarray) -> np.ndarray:
        """Each action's predicted reward (plus the exploration bonus when it is set)."""
        theta, inv = self._solve(attribute)
        x = np.asarray(features, dtype=np.float64)
        value = theta @ x
        if self.exploration > 0:
            value = value + self.exploration * np.sqrt(np.maximum(np.einsum("i,kij,j->k", x, inv, x), 0.0))
        return value

    def choose(self, attribute: str, features: np.ndarray) -> str:
        """The strategy with the highest predicted reward; ties and untrained attributes -> default."""
        if attribute not in self.counts or self.counts[attribute].sum() == 0:
            return self.default_strategy
        value = self.predicted_rewards(attribute, features)
        tied = [a for a, v in zip(self.actions, value) if v >= value.max() - _TIE]
        return self.default_strategy if self.default_strategy in tied else tied[0]

    def choose_for(self, attribute: Attribute, sources: Mapping[str, AttributeEstimate],
                   context: FusionContext) -> str:
        """`fusion.StrategyChooser`: the strategy for this image and attribute."""
        return self.choose(attribute.key, policy_features(attribute, sources, context))

    # ---- identity and persistence ------------------------------------------------------------
    def training_counts(self) -> dict[str, int]:
        """Labelled items seen per attribute (full-information updates count once per item)."""
        return {k: int(c.max()) if c.size else 0 for k, c in self.counts.items()}

    def content_hash(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps({"features": FEATURES, "actions": self.actions, "ridge": self.ridge,
                             "vocab": self.vocabulary.fingerprint}).encode())
        for key in sorted(self.gram):
            h.update(key.encode())
            for arr in (self.gram[key], self.b[key], self.counts[key]):
                h.update(np.ascontiguousarray(arr).tobytes())
        if self.calibration is not None:  # absent: the hash of a policy saved before calibration existed
            h.update(f"calibration {self.calibration.fingerprint}".encode())
        return h.hexdigest()

    def calibration_state(self) -> str:
        """One line: which calibration this policy's fused confidences go through, or that they are raw."""
        if self.calibration is None:
            return (f"uncalibrated: fusion policy {self.version} carries no confidence calibration "
                    "(too few calibration items, or trained before calibration existed); confidences are raw")
        return f"calibrated: {self.calibration.describe()}"

    @property
    def version(self) -> str:
        """`<generation>-<hash12>`: changes whenever the statistics or the calibration change."""
        return f"{self.generation}-{self.content_hash()[:12]}"

    def settings(self) -> dict:
        """Every setting that decides the policy's choices besides its statistics."""
        return {"code_version": POLICY_CODE_VERSION, "features": list(FEATURES), "actions": list(self.actions),
                "default_strategy": self.default_strategy, "ridge": self.ridge, "exploration": self.exploration,
                "thresholds": {"accept": self.thresholds.accept, "low": self.thresholds.low},
                "vocabulary_fingerprint": self.vocabulary.fingerprint, "model_key": self.model_key}

    @property
    def fingerprint(self) -> str:
        """A digest of the statistics and every setting: two policies that may choose differently
        never share it (the generation counter is left out: it names history, not behaviour)."""
        text = json.dumps({"statistics": self.content_hash(), **self.settings()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def unusable_reason(self, model_key: str | None) -> str | None:
        """Why this policy must not fuse signals of CLIP model `model_key` (None: CLIP not used), or
        None when it may: its context features were learnt from its own model's embeddings."""
        if self.model_key == model_key:
            return None
        trained = f"CLIP model {self.model_key}" if self.model_key else "a run without CLIP"
        now = f"CLIP model {model_key}" if model_key else "no CLIP"
        return f"the fusion policy was trained for {trained}, and this run uses {now}; retrain it"

    def save(self, path: str | Path) -> Path:
        """Write `policy.safetensors` + `policy.json` (a new generation when the state changed)."""
        digest = self.content_hash()
        if digest != self._saved_hash:
            self.generation += 1
            self.parent_hash = self._saved_hash
            self._saved_hash = digest
        tensors = {}
        for key in self.gram:
            tensors[f"{key}.gram"] = self.gram[key]
            tensors[f"{key}.b"] = self.b[key]
            tensors[f"{key}.count"] = self.counts[key]
        meta = {"format": POLICY_FORMAT, "code_version": POLICY_CODE_VERSION, "generation": self.generation,
                "content_hash": digest, "parent_hash": self.parent_hash,
                "vocabulary_fingerprint": self.vocabulary.fingerprint, "features": list(FEATURES),
                "actions": list(self.actions), "default_strategy": self.default_strategy, "ridge": self.ridge,
                "exploration": self.exploration, "model_key": self.model_key,
                "thresholds": {"accept": self.thresholds.accept, "low": self.thresholds.low},
                "training_counts": self.training_counts(),
                "calibration": self.calibration.to_dict() if self.calibration is not None else None}
        return save_artifact(path, "policy", tensors, meta)

    @classmethod
    def load(cls, path: str | Path, vocabulary: Vocabulary) -> "FusionPolicy":
        """Read a saved fusion policy; any flaw in the files is one ConfigError sentence (see `_load`)."""
        with malformed_artifact(path, "fusion policy"):
            return cls._load(path, vocabulary)

    @classmethod
    def _load(cls, path: str | Path, vocabulary: Vocabulary) -> "FusionPolicy":
        """Read a saved policy; refuses one trained for another vocabulary or feature set."""
        meta, tensors = load_artifact(path, "policy", POLICY_FORMAT, "fusion policy")
        if meta.get("vocabulary_fingerprint") != vocabulary.fingerprint:
            raise ArtifactMismatchError(f"The fusion policy at {path} was trained for vocabulary {meta.get('vocabulary_fingerprint')}, "
                              f"not the current {vocabulary.fingerprint}; retrain it.")
        if tuple(meta.get("features", ())) != FEATURES:
            raise ConfigError(f"The fusion policy at {path} uses other context features than this charattr version; retrain it.")
        th = meta.get("thresholds", {})
        policy = cls(vocabulary, Thresholds(th.get("accept", 0.8), th.get("low", 0.3)), meta["ridge"],
                     meta.get("exploration", 0.0), meta["default_strategy"], meta["actions"],
                     model_key=meta.get("model_key", UNRECORDED_MODEL))
        for key in policy.gram:
            if f"{key}.gram" in tensors:
                policy.gram[key] = tensors[f"{key}.gram"].astype(np.float64)
                policy.b[key] = tensors[f"{key}.b"].astype(np.float64)
                policy.counts[key] = tensors[f"{key}.count"].astype(np.int64)
        if meta.get("calibration"):  # older files have none: their confidences stay raw
            policy.calibration = ConfidenceCalibration.from_dict(meta["calibration"])
        policy.generation = int(meta["generation"])
        policy.parent_hash = meta.get("parent_hash")
        policy._saved_hash = policy.content_hash()
        if policy._saved_hash != meta.get("content_hash"):
            raise ConfigError(f"The fusion policy at {path} does not match its recorded hash "
                              "(a partial or edited file); retrain it.")
        return policy


def train_policy(examples: Iterable[EvalExample], vocabulary: Vocabulary,
                 previous: FusionPolicy | str | Path | None = None, **options) -> FusionPolicy:
    """Warm-start from `previous` (a policy or a saved one) when given, then add `examples`."""
    if isinstance(previous, FusionPolicy):
        policy = previous
    elif previous is not None:
        policy = FusionPolicy.load(previous, vocabulary)
    else:
        policy = FusionPolicy(vocabulary, **options)
    policy.update(examples)
    return policy


class RandomStrategyChooser:
    """Baseline: a uniformly random strategy per image and attribute (seeded, reproducible)."""

    def __init__(self, seed: int = 0, strategies: Sequence[str] = ALL_STRATEGIES) -> None:
        self._rng = random.Random(seed)
        self.strategies = tuple(check_strategy(s) for s in strategies)

    def choose_for(self, attribute: Attribute, sources: Mapping[str, AttributeEstimate],
                   context: FusionContext) -> str:
        return self._rng.choice(self.strategies)
