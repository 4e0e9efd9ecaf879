"""Attribute probes: one linear classifier per attribute on CLIP image embeddings.

What they are: for a single-valued attribute a softmax regression over its values, for a
multi-valued one an independent logistic regression per value (one-vs-rest). Inputs are the
L2-normalised embeddings of `clip_embeddings`; labels are the image's tag parse for that
attribute when it is confident (>= the accept threshold, 0.8 by default). The probes then
predict the attribute for images with missing or poor tags. Attributes with fewer than
`min_examples` confident examples, or fewer than two values among them, get no probe (recorded
in `AttributeProbes.skipped`, not an error); fusion then simply has no "probe" source for them.

Splits (`splits.py`): heads are fitted on the `probe_fit` buckets and calibrated on the
`probe_calibration` buckets of the same collection; `policy_train` and `holdout` images are never
used here, so the policy and the evaluation see the probes as they behave on unseen images.

Training streams: `train_probes(make_batches, ...)` calls `make_batches()` once for a scan
(label counts and per-dimension mean/std to standardise the inputs), once per epoch for
mini-batch Adam on cross-entropy with L2 weight decay, and once for calibration — `epochs + 2`
calls in all — and never holds more than one batch plus at most `max_calibration` logit rows
per attribute. The standardisation is folded into the saved weights (`predict` is one matmul).

Calibration: one temperature per attribute (logits / T), fitted by minimising the negative
log-likelihood on the calibration slice (golden-section search over log T; the NLL is unimodal
in it). ECE (10 bins) before and after is recorded per attribute; both are measured on the
slice T was fitted on, which for a single scalar is only slightly optimistic — the held-out
evaluation (`evaluation.py`) measures calibration properly.

Predictions: `AttributeProbes.predict(embeddings)` returns, per row, `{attribute: estimate}` with
evidence `("probe",)`: single-valued -> the most probable value, its probability as confidence
and the distribution as scores; multi-valued -> every value with probability >= 0.5 (else the
most probable one) and, as confidence, the smallest probability among the named values.

Honest limits: the probes learn to imitate confident tags, including their systematic mistakes,
and the class balance of this collection's tags (no reweighting: probabilities reflect the data);
for multi-valued attributes a confident parse is taken to list *all* values that hold, so
untagged values count as absent. Files: `probes.safetensors` (weights) + `probes.json` (value
names, model key, vocabulary fingerprint, temperatures, counts, metrics, version); no pickle.
Loading refuses probes trained for another CLIP model or vocabulary.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .artifacts import load_artifact, malformed_artifact, save_artifact
from .errors import ArtifactMismatchError, ConfigError
from .evaluation import answer_score, expected_calibration_error
from .fusion import MULTI_VALUE_THRESHOLD, clean_estimate
from .records import AttributeEstimate, TagParse
from .schema import Attribute, Vocabulary
from .splits import DEFAULT_SPLITS, SplitPlan

PROBES_CODE_VERSION = "1"
PROBES_FORMAT = "charattr-attribute-probes"


@dataclass
class ProbeBatch:
    """One training batch: ids, their embeddings (n, d) and their tag parses (None = no tags)."""

    image_ids: Sequence[str]
    embeddings: np.ndarray
    tag_parses: Sequence[TagParse | None]

    def __post_init__(self) -> None:
        if not len(self.image_ids) == len(self.embeddings) == len(self.tag_parses):
            raise ValueError("A ProbeBatch needs as many embeddings and tag parses as image ids.")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def _nll(logits: np.ndarray, targets: np.ndarray, multi: bool) -> float:
    if multi:  # binary cross-entropy, stable form
        return float(np.mean(np.logaddexp(0.0, logits) - targets * logits))
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(targets)), targets]))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, multi: bool,
                    bounds: tuple[float, float] = (0.05, 20.0), iterations: int = 60) -> float:
    """The temperature T minimising the NLL of logits / T (golden-section search over log T)."""
    if len(logits) == 0:
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    f = lambda log_t: _nll(logits / math.exp(log_t), targets, multi)  # noqa: E731
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return float(math.exp((lo + hi) / 2))


def _calibration_ece(probs: np.ndarray, targets: np.ndarray, multi: bool) -> float:
    """Top-label ECE (single-valued) or ECE of every per-value yes/no decision (multi-valued)."""
    if multi:
        conf = np.maximum(probs, 1 - probs)
        return expected_calibration_error(conf, (probs >= 0.5) == (targets > 0.5))
    return expected_calibration_error(probs.max(axis=1), probs.argmax(axis=1) == targets)


@dataclass
class ProbeHead:
    """One attribute's classifier in embedding space: probabilities = f((x @ W + b) / T)."""

    attribute: str
    multi: bool
    values: tuple[str, ...]
    weight: np.ndarray  # (d, k)
    bias: np.ndarray  # (k,)
    temperature: float = 1.0
    counts: dict[str, int] = field(default_factory=dict)  # confident examples: {"fit": n, "calibration": n}
    value_counts: dict[str, int] = field(default_factory=dict)  # fit examples naming each value
    metrics: dict = field(default_factory=dict)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight + self.bias

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x) / self.temperature
        return _sigmoid(z) if self.multi else _softmax(z)

    def estimate(self, p: np.ndarray) -> AttributeEstimate:
        """An estimate from one row of probabilities."""
        scores = {v: float(s) for v, s in zip(self.values, p)}
        best = int(np.argmax(p))
        if self.multi:
            chosen = [i for i, s in enumerate(p) if s >= MULTI_VALUE_THRESHOLD] or [best]
            conf = float(min(p[i] for i in chosen))
        else:
            chosen, conf = [best], float(p[best])
        return AttributeEstimate(self.attribute, tuple(self.values[i] for i in chosen), conf, ("probe",), scores)


class AttributeProbes:
    """The trained heads of one CLIP model and vocabulary, with what training recorded."""

    def __init__(self, model_key: str, vocabulary_fingerprint: str, embedding_dim: int,
                 heads: Mapping[str, ProbeHead], skipped: Mapping[str, str] | None = None,
                 training: Mapping[str, object] | None = None) -> None:
        self.model_key = model_key
        self.vocabulary_fingerprint = vocabulary_fingerprint
        self.embedding_dim = int(embedding_dim)
        self.heads = dict(heads)
        self.skipped = dict(skipped or {})
        self.training = dict(training or {})

    def predict(self, embeddings: np.ndarray) -> list[dict[str, AttributeEstimate]]:
        """Per row `{attribute: estimate}`; a row with non-finite values gets no estimates."""
        x = np.asarray(embeddings, dtype=np.float64)
        if not self.heads:  # nothing was trained: the probe source is absent for every row
            return [{} for _ in range(len(x))]
        if x.ndim != 2 or (x.shape[0] and x.shape[1] != self.embedding_dim):
            raise ConfigError(f"The probes expect {self.embedding_dim}-dimensional embeddings of {self.model_key}, "
                              f"got shape {tuple(x.shape)}; use embeddings of the same CLIP model.")
        finite = np.isfinite(x).all(axis=1)
        x = np.where(finite[:, None], x, 0.0)
        out: list[dict[str, AttributeEstimate]] = [{} for _ in range(len(x))]
        for key, head in self.heads.items():
            probs = head.probabilities(x)
            for i in np.flatnonzero(finite):
                out[i][key] = head.estimate(probs[i])
        return out

    def content_hash(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.model_key}|{self.vocabulary_fingerprint}|{self.embedding_dim}".encode())
        for key in sorted(self.heads):
            head = self.heads[key]
            h.update(f"{key}|{head.multi}|{head.values}|{head.temperature!r}".encode())
            h.update(np.ascontiguousarray(head.weight, dtype=np.float32).tobytes())
            h.update(np.ascontiguousarray(head.bias, dtype=np.float32).tobytes())
        return h.hexdigest()

    @property
    def probes_version(self) -> str:
        """Stage version: code, CLIP model, vocabulary and the weights' hash."""
        return (f"probes-{PROBES_CODE_VERSION}+{self.model_key}+vocab-{self.vocabulary_fingerprint}"
                f"+{self.content_hash()[:12]}")

    def save(self, path: str | Path) -> Path:
        """Write `probes.safetensors` (weights) + `probes.json` (everything else)."""
        tensors = {}
        for key, head in self.heads.items():
            tensors[f"{key}.weight"] = np.ascontiguousarray(head.weight, dtype=np.float32)
            tensors[f"{key}.bias"] = np.ascontiguousarray(head.bias, dtype=np.float32)
        meta = {"format": PROBES_FORMAT, "code_version": PROBES_CODE_VERSION, "version": self.probes_version,
                "model_key": self.model_key, "vocabulary_fingerprint": self.vocabulary_fingerprint,
                "embedding_dim": self.embedding_dim, "skipped": self.skipped, "training": self.training,
                "attributes": {key: {"multi": h.multi, "values": list(h.values), "temperature": h.temperature,
                                     "counts": h.counts, "value_counts": h.value_counts, "metrics": h.metrics}
                               for key, h in self.heads.items()}}
        return save_artifact(path, "probes", tensors, meta)

    @classmethod
    def load(cls, path: str | Path, vocabulary: Vocabulary, model_key: str) -> "AttributeProbes":
        """Read a saved attribute probes; any flaw in the files is one ConfigError sentence (see `_load`)."""
        with malformed_artifact(path, "attribute probes"):
            return cls._load(path, vocabulary, model_key)

    @classmethod
    def _load(cls, path: str | Path, vocabulary: Vocabulary, model_key: str) -> "AttributeProbes":
        """Read saved probes; refuses probes of another CLIP model or vocabulary (ConfigError)."""
        meta, tensors = load_artifact(path, "probes", PROBES_FORMAT, "attribute probes")
        if meta.get("model_key") != model_key:
            raise ArtifactMismatchError(f"The attribute probes at {path} were trained on {meta.get('model_key')} embeddings, "
                              f"not {model_key}; retrain them or use the matching CLIP model.")
        if meta.get("vocabulary_fingerprint") != vocabulary.fingerprint:
            raise ArtifactMismatchError(f"The attribute probes at {path} were trained for vocabulary {meta.get('vocabulary_fingerprint')}, "
                              f"not the current {vocabulary.fingerprint}; retrain them.")
        heads = {}
        for key, spec in meta["attributes"].items():
            heads[key] = ProbeHead(key, bool(spec["multi"]), tuple(spec["values"]),
                                   tensors[f"{key}.weight"].astype(np.float64), tensors[f"{key}.bias"].astype(np.float64),
                                   float(spec["temperature"]), dict(spec.get("counts", {})),
                                   dict(spec.get("value_counts", {})), dict(spec.get("metrics", {})))
        return cls(meta["model_key"], meta["vocabulary_fingerprint"], meta["embedding_dim"], heads,
                   meta.get("skipped"), meta.get("training"))


# ---- training -----------------------------------------------------------------------------------

def _labels(batch: ProbeBatch, attribute: Attribute, accept: float) -> tuple[list[int], list[tuple[str, ...]]]:
    """Rows whose tag parse for the attribute is confident, and their values."""
    rows, values = [], []
    for i, parse in enumerate(batch.tag_parses):
        if parse is None:
            continue
        answer = clean_estimate(attribute, parse.estimates.get(attribute.key), "tags")
        if answer is not None and answer.confidence >= accept:
            rows.append(i)
            values.append(answer.values)
    return rows, values


def _targets(attribute: Attribute, values: Sequence[tuple[str, ...]]) -> np.ndarray:
    index = {v: i for i, v in enumerate(attribute.value_names)}
    if not attribute.multi:
        return np.array([index[v[0]] for v in values], dtype=np.int64)
    y = np.zeros((len(values), len(index)))
    for r, vals in enumerate(values):
        y[r, [index[v] for v in vals]] = 1.0
    return y


class _Adam:
    """Adam for a list of numpy parameters, updated in place."""

    def __init__(self, params: list[np.ndarray], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / (1 - b1 ** self.t)) / (np.sqrt(v / (1 - b2 ** self.t)) + self.eps)


class _Reservoir:
    """A uniform sample of at most `size` (logits, target) rows from a stream."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng, self.seen = size, rng, 0
        self.logits: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def add(self, logits: np.ndarray, targets: np.ndarray) -> None:
        for z, y in zip(logits, targets):
            self.seen += 1
            if len(self.logits) < self.size:
                self.logits.append(z)
                self.targets.append(y)
            else:
                j = int(self.rng.integers(0, self.seen))
                if j < self.size:
                    self.logits[j], self.targets[j] = z, y

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.logits), np.array(self.targets)


@dataclass
class _Scan:
    """What one pass over the data tells before training: sizes, input statistics, label counts."""

    dim: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.ones(0))
    fit_rows: int = 0
    fit_examples: dict[str, int] = field(default_factory=dict)  # confident, probe_fit split
    fit_per_value: dict[str, np.ndarray] = field(default_factory=dict)
    calibration_examples: dict[str, int] = field(default_factory=dict)


def _scan(make_batches: Callable[[], Iterable[ProbeBatch]], vocabulary: Vocabulary, accept: float,
          splits: SplitPlan) -> _Scan:
    scan = _Scan(fit_examples={a.key: 0 for a in vocabulary.attributes},
                 fit_per_value={a.key: np.zeros(len(a.values), dtype=np.int64) for a in vocabulary.attributes},
                 calibration_examples={a.key: 0 for a in vocabulary.attributes})
    total = total_sq = None
    for batch, x, split in _iterate(make_batches, splits):
        if total is None:
            scan.dim = x.shape[1]
            total, total_sq = np.zeros(scan.dim), np.zeros(scan.dim)
        elif x.shape[1] != scan.dim:
            raise ConfigError(f"Probe training got embeddings of size {x.shape[1]} after {scan.dim}; use one CLIP model.")
        fit = split == "probe_fit"
        total += x[fit].sum(axis=0)
        total_sq += (x[fit] ** 2).sum(axis=0)
        scan.fit_rows += int(fit.sum())
        for attribute in vocabulary.attributes:
            rows, values = _labels(batch, attribute, accept)
            for r, vals in zip(rows, values):
                if split[r] == "probe_fit":
                    scan.fit_examples[attribute.key] += 1
                    for v in vals:
                        scan.fit_per_value[attribute.key][attribute.index(v)] += 1
                elif split[r] == "probe_calibration":
                    scan.calibration_examples[attribute.key] += 1
    scan.mean, scan.std = np.zeros(scan.dim), np.ones(scan.dim)
    if scan.fit_rows:
        scan.mean = total / scan.fit_rows
        scan.std = np.sqrt(np.maximum(total_sq / scan.fit_rows - scan.mean ** 2, 0.0)) + 1e-6
    return scan


def _split_rows(batch: ProbeBatch, split: np.ndarray, attribute: Attribute, accept: float,
                wanted: str) -> tuple[list[int], np.ndarray]:
    """Rows of one split with a confident label for the attribute, and their targets."""
    rows, values = _labels(batch, attribute, accept)
    keep = [i for i, r in enumerate(rows) if split[r] == wanted]
    return [rows[i] for i in keep], _targets(attribute, [values[i] for i in keep])


def train_probes(make_batches: Callable[[], Iterable[ProbeBatch]], vocabulary: Vocabulary, model_key: str,
                 epochs: int = 20, learning_rate: float = 0.01, weight_decay: float = 1e-4, step_size: int = 256,
                 min_examples: int = 20, accept: float = 0.8, max_calibration: int = 20_000, seed: int = 0,
                 splits: SplitPlan = DEFAULT_SPLITS) -> AttributeProbes:
    """Train one probe per attribute from streamed batches (see the module docstring).

    `make_batches()` must yield the same data each time it is called; it is called `epochs + 2`
    times (once only when no attribute has enough examples for a probe). Rows whose embedding
    is not finite are ignored.
    """
    if epochs < 1 or step_size < 1 or min_examples < 1:
        raise ConfigError("Probe training needs epochs, step_size and min_examples of at least 1.")
    rng = np.random.default_rng(seed)
    scan = _scan(make_batches, vocabulary, accept, splits)

    skipped: dict[str, str] = {}
    params: dict[str, tuple[np.ndarray, np.ndarray, _Adam]] = {}
    for attribute in vocabulary.attributes:
        n, classes = scan.fit_examples[attribute.key], int((scan.fit_per_value[attribute.key] > 0).sum())
        if n < min_examples:
            skipped[attribute.key] = f"{n} confident examples, fewer than {min_examples}"
        elif classes < 2:
            skipped[attribute.key] = f"confident examples show only {classes} value(s)"
        else:
            w, b = np.zeros((scan.dim, len(attribute.values))), np.zeros(len(attribute.values))
            params[attribute.key] = (w, b, _Adam([w, b], learning_rate))
    trained = [a for a in vocabulary.attributes if a.key in params]

    for _ in range(epochs if trained else 0):  # mini-batch Adam on standardised inputs
        for batch, x, split in _iterate(make_batches, splits):
            z = (x - scan.mean) / scan.std
            for attribute in trained:
                rows, targets = _split_rows(batch, split, attribute, accept, "probe_fit")
                w, b, adam = params[attribute.key]
                order = rng.permutation(len(rows))
                for start in range(0, len(rows), step_size):
                    idx = order[start:start + step_size]
                    _step(z[[rows[i] for i in idx]], targets[idx], w, b, adam, attribute.multi, weight_decay)

    heads: dict[str, ProbeHead] = {}
    for attribute in trained:  # fold the standardisation into the weights: predict is one matmul
        w, b, _ = params[attribute.key]
        folded = w / scan.std[:, None]
        # Rounded to the float32 that is saved, so a loaded probe predicts exactly the same.
        heads[attribute.key] = ProbeHead(attribute.key, attribute.multi, attribute.value_names,
                                         folded.astype(np.float32).astype(np.float64),
                                         (b - scan.mean @ folded).astype(np.float32).astype(np.float64))
    reservoirs = {a.key: _Reservoir(max_calibration, rng) for a in trained}
    for batch, x, split in (_iterate(make_batches, splits) if trained else ()):
        for attribute in trained:
            rows, targets = _split_rows(batch, split, attribute, accept, "probe_calibration")
            if rows:
                reservoirs[attribute.key].add(heads[attribute.key].logits(x[rows]), targets)
    for attribute in trained:
        head = heads[attribute.key]
        head.counts = {"fit": scan.fit_examples[attribute.key],
                       "calibration": scan.calibration_examples[attribute.key]}
        head.value_counts = {v: int(c) for v, c in zip(attribute.value_names, scan.fit_per_value[attribute.key])}
        head.metrics = _calibrate(head, *reservoirs[attribute.key].arrays())
    training = {"epochs": epochs, "learning_rate": learning_rate, "weight_decay": weight_decay, "step_size": step_size,
                "min_examples": min_examples, "accept": accept, "seed": seed, "fit_rows": scan.fit_rows,
                "splits": {name: [splits.buckets(name).start, splits.buckets(name).stop]
                           for name in ("probe_fit", "probe_calibration")}}
    return AttributeProbes(model_key, vocabulary.fingerprint, scan.dim, heads, skipped, training)


def _iterate(make_batches: Callable[[], Iterable[ProbeBatch]],
             splits: SplitPlan) -> Iterator[tuple[ProbeBatch, np.ndarray, np.ndarray]]:
    """One pass: each batch with its finite rows as float64 and each row's split name."""
    for batch in make_batches():
        x = np.asarray(batch.embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            continue
        split = np.array([splits.split_of(i) for i in batch.image_ids], dtype=object)
        split[~np.isfinite(x).all(axis=1)] = "unusable"
        yield batch, np.where(np.isfinite(x), x, 0.0), split


def _step(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, adam: _Adam, multi: bool, weight_decay: float) -> None:
    """One Adam step on the mean cross-entropy of a mini-batch (+ L2 on the weights)."""
    logits = x @ w + b
    if multi:
        residual = _sigmoid(logits) - y
    else:
        residual = _softmax(logits)
        residual[np.arange(len(y)), y] -= 1.0
    residual /= len(x)
    adam.step([x.T @ residual + weight_decay * w, residual.sum(axis=0)])


def _calibrate(head: ProbeHead, logits: np.ndarray, targets: np.ndarray) -> dict:
    """Fit the head's temperature on the calibration sample; return before/after metrics."""
    if len(logits) == 0:
        head.temperature = 1.0
        return {"calibration_examples": 0}
    before = _sigmoid(logits) if head.multi else _softmax(logits)
    head.temperature = fit_temperature(logits, targets, head.multi)
    after = _sigmoid(logits / head.temperature) if head.multi else _softmax(logits / head.temperature)
    if head.multi:
        chosen = [tuple(head.values[i] for i in np.flatnonzero(p >= MULTI_VALUE_THRESHOLD)) or (head.values[int(p.argmax())],)
                  for p in after]
        truth = [tuple(head.values[i] for i in np.flatnonzero(t > 0.5)) for t in targets]
        accuracy = float(np.mean([answer_score(c, t, True) for c, t in zip(chosen, truth)]))
    else:
        accuracy = float(np.mean(after.argmax(axis=1) == targets))
    return {"calibration_examples": int(len(logits)), "temperature": head.temperature, "accuracy": accuracy,
            "ece_before": _calibration_ece(before, targets, head.multi),
            "ece_after": _calibration_ece(after, targets, head.multi),
            "nll_before": _nll(logits, targets, head.multi), "nll_after": _nll(logits / head.temperature, targets, head.multi)}

