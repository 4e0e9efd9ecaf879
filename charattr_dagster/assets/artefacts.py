"""What the learning and product assets share: the learned artefacts read back from the
warehouse, and the lazily loaded zero-shot scorer. A module of its own so that
`assets/learning.py` and `assets/product.py` never import each other."""

from typing import Any, Callable

import numpy as np

from charattr_core.errors import ConfigError
from charattr_core.schema import Vocabulary

from ..asset_keys import ATTRIBUTE_PROBES, FUSION_POLICY
from ..resources import ClipModelResource
from ..warehouse import Warehouse


def load_probes(warehouse: Warehouse, vocabulary: Vocabulary, model_key: str | None):
    """The trained probes for this CLIP model and vocabulary, or None (none trained, or trained for
    another model/vocabulary: those are ignored rather than misapplied)."""
    from charattr_core.probes import AttributeProbes

    folder = warehouse.asset_dir(ATTRIBUTE_PROBES)
    if model_key is None or not (folder / "probes.json").is_file():
        return None
    try:
        probes = AttributeProbes.load(folder, vocabulary, model_key)
    except ConfigError:
        return None
    return probes if probes.heads else None


def load_policy(warehouse: Warehouse, vocabulary: Vocabulary):
    """The trained fusion policy for this vocabulary, or None."""
    from charattr_core.policy import FusionPolicy

    folder = warehouse.asset_dir(FUSION_POLICY)
    if not (folder / "policy.json").is_file():
        return None
    try:
        return FusionPolicy.load(folder, vocabulary)
    except ConfigError:
        return None


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
