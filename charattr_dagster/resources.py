"""Resources: the configured things the assets use — CLIP, the results store, the source and the
pipeline settings (the warehouse lives in `warehouse.py`). All are `ConfigurableResource`s, so
the launchpad shows and validates their settings; `definitions.py` fills in the defaults from
`Settings` (the environment).

Heavy objects are created lazily and kept in a `PrivateAttr` (rather than eagerly in
`setup_for_execution`): the CLIP model is loaded at most once per process (`cached_clip_model`:
once for all runs of a `charattr run`, once per step under the multiprocess executor, once per
Celery worker for all the steps and shards it serves), and not at all when every image of a
step is already in the cache.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Optional

import dagster as dg
from pydantic import PrivateAttr

from charattr_core.config import PipelineConfig
from charattr_core.errors import ModelUnavailableError

if TYPE_CHECKING:
    from charattr_core.clip_model import ClipModel
    from charattr_core.schema import Vocabulary
    from charattr_core.sources.base import Source
    from charattr_core.store import ResultStore


CLIP_DISABLED = "CLIP disabled by configuration (CHARATTR_USE_CLIP=0 or charattr run --no-clip)"


class ClipModelResource(dg.ConfigurableResource):
    """An open_clip model: architecture, weights (an open_clip tag or a local checkpoint), device."""

    enabled: bool = True  # False: tags only; nothing imports torch or looks for weights
    model_name: str = "ViT-B-32"
    pretrained: Optional[str] = "openai"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    num_workers: int = 2
    allow_download: Optional[bool] = None  # fetch missing tagged weights; None: env CHARATTR_ALLOW_DOWNLOAD (off)

    _model: Optional["ClipModel"] = PrivateAttr(default=None)
    _model_key: Optional[str] = PrivateAttr(default=None)

    def model_key(self) -> str:
        """The identity of the weights (`ViT-B-32/openai`, `ViT-B-32/file:<hash>`), found without
        loading them. Raises `ModelUnavailableError` when the weights are not available offline
        and `ConfigError` for an unknown model or a missing checkpoint file."""
        if self._model_key is None:
            from charattr_core.clip_loading import clip_model_key
            self._model_key = clip_model_key(self.model_name, self.pretrained, allow_download=self.allow_download)
        return self._model_key

    def unavailable_reason(self) -> Optional[str]:
        """None when the weights can be loaded, else why CLIP is not used (switched off, or the
        one-sentence `ModelUnavailableError`)."""
        if not self.enabled:
            return CLIP_DISABLED
        try:
            self.model_key()
        except ModelUnavailableError as exc:
            return str(exc)
        return None

    def get(self) -> "ClipModel":
        """The model, loaded on first use and then kept for the rest of this process."""
        if self._model is None:
            self._model = cached_clip_model(self.model_name, self.pretrained, self.model_key(), self.device,
                                            self.precision, self.allow_download)
        return self._model


# Process-level model cache: (model key, device, precision) -> model. `charattr run` executes
# several runs in one process and a Celery worker serves many steps and shards in one process; the
# model (read-only at inference) serves them all. Keyed by the model key, not the `pretrained`
# string, so a checkpoint file replaced at the same path loads again; by the resolved device, so
# "auto" and "cuda" share one copy. At most two models stay loaded (GPU memory).
_MODELS: "collections.OrderedDict[tuple[str, str, str], ClipModel]" = collections.OrderedDict()
_MODELS_LOCK = threading.Lock()
MAX_CACHED_MODELS = 2


def cached_clip_model(model_name: str, pretrained: Optional[str], model_key: str, device: str, precision: str,
                      allow_download: Optional[bool]) -> "ClipModel":
    """The model for `model_key` on `device`, loaded once per process."""
    from charattr_core.clip import load_clip
    from charattr_core.clip_loading import resolve_device, resolve_precision

    torch_device = resolve_device(device)
    key = (model_key, str(torch_device), resolve_precision(precision, torch_device))
    with _MODELS_LOCK:  # two threads asking at once load once
        model = _MODELS.get(key)
        if model is None:
            model = load_clip(model_name, pretrained, device=key[1], precision=precision,
                              allow_download=allow_download)
            _MODELS[key] = model
            while len(_MODELS) > MAX_CACHED_MODELS:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(key)
        return model


# The assets that write the results database retry when it goes away (a server restart, a network
# drop, a SQLite lock held too long): up to 3 more attempts, about 5, 15 and 35 s later, with jitter
# so that many runs do not come back at the same instant. Each attempt resumes from the cache.
# Failures that a retry cannot fix raise `dg.Failure(..., allow_retries=False)` instead.
STORE_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL,
                                    jitter=dg.Jitter.PLUS_MINUS)


class ResultStoreResource(dg.ConfigurableResource):
    """The results/cache database (SQLite by default, PostgreSQL by URL)."""

    database_url: str

    _store: Optional["ResultStore"] = PrivateAttr(default=None)

    def open(self) -> "ResultStore":
        """The store, opened on first use (a bad URL raises `ConfigError`)."""
        if self._store is None:
            from charattr_core.store import ResultStore
            self._store = ResultStore(self.database_url)
        return self._store

    def redacted_url(self) -> str:
        """The URL without its password, for metadata and messages."""
        from charattr_core.store import redact_url
        return redact_url(self.database_url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class SourceResource(dg.ConfigurableResource):
    """The image collection: a folder with sidecar tags, Parquet files or WebDataset tars."""

    path: str

    def open(self) -> "Source":
        """The reader for `path` (raises `ConfigError` when it does not exist)."""
        from charattr_core.sources import open_source
        return open_source(self.path)


class PipelineSettings(dg.ConfigurableResource):
    """Settings of the stages: vocabulary, fusion thresholds and strategy, input safety and the
    bounds the asset checks enforce."""

    vocabulary: Optional[str] = None  # an attributes.toml; None = the bundled default
    confidence_threshold: float = 0.8
    low_confidence_threshold: float = 0.3
    fusion_strategy: str = "confidence_weighted"
    use_learned_policy: bool = True
    max_image_pixels: int = 89_478_485
    batch_size: int = 256  # images per stage batch (one cache transaction each)
    max_failed_fraction: float = 0.5  # blocking check on raw_images
    labels_path: Optional[str] = None  # user corrections (CSV/Parquet: image_id, attribute, value)
    max_eval_images: int = 20_000  # held-out images the policy evaluation scores (bootstrap in memory)
    eval_bootstrap: int = 1000  # bootstrap resamples behind the evaluation's confidence intervals
    reports_dir: str = "data/reports"

    def pipeline_config(self, **overrides) -> PipelineConfig:
        """The same settings as a validated `PipelineConfig` (raises `ConfigError` when wrong)."""
        return PipelineConfig.from_mapping({
            "vocabulary": self.vocabulary, "confidence_threshold": self.confidence_threshold,
            "low_confidence_threshold": self.low_confidence_threshold, "fusion_strategy": self.fusion_strategy,
            "use_rl": self.use_learned_policy, "max_image_pixels": self.max_image_pixels, **overrides})

    def load_vocabulary(self) -> "Vocabulary":
        from charattr_core.schema import load_vocabulary
        return load_vocabulary(self.vocabulary)
