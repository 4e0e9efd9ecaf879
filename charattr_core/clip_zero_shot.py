"""Zero-shot attribute estimates from stored image embeddings and cached text embeddings.

Pure numpy, vectorised over the batch: no trip through the image encoder. Per attribute, the
image-text cosine similarities times `logit_scale` (CLIP's learned temperature is ~100) go
through a softmax over the attribute's values, giving `p`.

Single-valued attributes: the answer is argmax `p`, its confidence is that probability and
`scores` is the whole distribution (sums to 1).

Multi-valued attributes (hair colour, accessories, ...): CLIP similarities only mean something
relative to each other, so membership is decided relative to the best value. A value is chosen
when `p >= multi_ratio * p_top` and `p >= multi_floor` (the top value always is), at most
`multi_max_values` of them, strongest first. Two colours that both fit split the mass roughly
evenly and both pass the ratio; a dominant colour leaves the others far below it. The answer's
confidence is the probability mass of the chosen values (how much of the distribution the
answer covers). `scores` are per-value presence scores, not a distribution:
`score_v = confidence * p_v / p_top`, so the top value scores `confidence`, every chosen value
scores at least `multi_ratio * confidence`, and all lie in [0, 1].
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .records import AttributeEstimate
from .schema import Vocabulary

ZERO_SHOT_CODE_VERSION = 1  # bump when the scoring rules below change
ZERO_SHOT_EVIDENCE = ("clip:zero-shot",)
DEFAULT_LOGIT_SCALE = 100.0
MULTI_RATIO = 0.5
MULTI_FLOOR = 0.15
MULTI_MAX_VALUES = 3


def zero_shot_version(model_key: str, vocabulary: Vocabulary) -> str:
    """Version of zero-shot estimates: the rules, the model and the vocabulary (prompts) they used."""
    return f"zeroshot-{ZERO_SHOT_CODE_VERSION}+{model_key}+vocab-{vocabulary.fingerprint}"


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _multi_choice(probs: np.ndarray, ratio: float, floor: float, max_values: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (chosen mask (N, V), confidence (N,), presence scores (N, V)); see the module docstring."""
    n, v = probs.shape
    order = np.argsort(-probs, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(v), (n, v)), axis=1)
    top = np.take_along_axis(probs, order[:, :1], axis=1)
    chosen = ((probs >= ratio * top) & (probs >= floor)) | (ranks == 0)
    chosen &= ranks < max_values
    confidence = (probs * chosen).sum(axis=1)
    scores = np.clip(confidence[:, None] * probs / top, 0.0, 1.0)
    return chosen, confidence, scores


def zero_shot(embeddings: np.ndarray, vocabulary: Vocabulary, text_embeddings: Mapping[str, np.ndarray],
              logit_scale: float = DEFAULT_LOGIT_SCALE, *, multi_ratio: float = MULTI_RATIO,
              multi_floor: float = MULTI_FLOOR, multi_max_values: int = MULTI_MAX_VALUES,
              ) -> list[dict[str, AttributeEstimate]]:
    """Score every attribute of every image: `(N, dim)` embeddings -> N dicts `{attribute: estimate}`.

    `embeddings` are L2-normalised rows (float16 as stored is fine); `text_embeddings` is
    `ClipModel.text_embeddings(vocabulary)`. Rules: see the module docstring.
    """
    image = np.asarray(embeddings, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (N, dim), got shape {image.shape}")
    results: list[dict[str, AttributeEstimate]] = [{} for _ in range(len(image))]
    if not len(image):
        return results
    for attribute in vocabulary.attributes:
        text = text_embeddings.get(attribute.key)
        if text is None:
            raise ValueError(f"text embeddings have no entry for attribute {attribute.key!r}; "
                             "compute them with ClipModel.text_embeddings(vocabulary)")
        if text.shape != (len(attribute.values), image.shape[1]):
            raise ValueError(f"text embeddings for {attribute.key!r} have shape {text.shape}, expected "
                             f"({len(attribute.values)}, {image.shape[1]})")
        probs = _softmax(logit_scale * (image @ np.asarray(text, dtype=np.float32).T))
        names = attribute.value_names
        if attribute.multi:
            chosen, confidence, scores = _multi_choice(probs, multi_ratio, multi_floor, multi_max_values)
            order = np.argsort(-probs, axis=1, kind="stable")
            answers = [tuple(names[j] for j in order[i] if chosen[i, j]) for i in range(len(image))]
        else:
            top = probs.argmax(axis=1)
            confidence = probs[np.arange(len(image)), top]
            scores = probs
            answers = [(names[j],) for j in top]
        for i, row in enumerate(scores.tolist()):
            results[i][attribute.key] = AttributeEstimate(
                attribute=attribute.key, values=answers[i], confidence=float(confidence[i]),
                evidence=ZERO_SHOT_EVIDENCE, scores=dict(zip(names, row)))
    return results
