"""The lazily loaded zero-shot scorer that the learning and product assets share (a module of its
own so that `assets/learning.py` and `assets/product.py` never import each other; the learned
artefacts they both read come from `charattr_dagster/artifacts.py`)."""

from typing import Any, Callable

import numpy as np

from ..resources import ClipModelResource


def lazy_zero_shot(clip: ClipModelResource, vocabulary) -> Callable[[np.ndarray], list[dict]]:
    """Zero-shot scoring whose text embeddings (and model) are loaded only when an image misses the cache."""
    from charattr_core.clip import zero_shot

    text: dict[str, Any] = {}

    def score(matrix: np.ndarray) -> list[dict]:
        if "embeddings" not in text:
            model = clip.get()
            text["embeddings"], text["logit_scale"] = model.text_embeddings(vocabulary), model.logit_scale
        return zero_shot(matrix, vocabulary, text["embeddings"], text["logit_scale"])

    return score
