"""Resources: the configured things the assets use — CLIP, the results store, the source and the
pipeline settings (the warehouse lives in `warehouse.py`). All are `ConfigurableResource`s, so
the launchpad shows and validates their settings. Their fields are settings of
`charattr_core.settings.Settings`, with the same names, defaults and descriptions (`_setting`);
`definitions.py` fills in the values of one `Settings` read from the environment, as literals, so
the launchpad shows what the run uses and the code versions were computed from (only a database
URL with a password goes through `dg.EnvVar`).

Heavy objects are created lazily and kept in a `PrivateAttr` (rather than eagerly in
`setup_for_execution`): the CLIP model is loaded at most once per step process (once per run
under the in-process executor, once per step under the multiprocess one), and not at all when
every image of a step is already in the cache.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Optional

import dagster as dg
from pydantic import Field, PrivateAttr

from charattr_core.errors import ModelUnavailableError
from charattr_core.settings import Settings, env_var

if TYPE_CHECKING:
    from charattr_core.clip_model import ClipModel
    from charattr_core.schema import Vocabulary
    from charattr_core.sources.base import Source
    from charattr_core.store import ResultStore


CLIP_DISABLED = "CLIP disabled by configuration (CHARATTR_USE_CLIP=0 or charattr run --no-clip)"


def _setting(name: str) -> Any:
    """A resource field that is the setting `name`: its default and description (and variable)."""
    field = Settings.model_fields[name]
    return Field(default=field.default, description=f"{field.description} (${env_var(name)})")


class _FromSettings:
    @classmethod
    def from_settings(cls, settings: Settings, **values: Any):
        """This resource configured with the values of `settings` for each of its fields."""
        names = [n for n in cls.model_fields if n in Settings.model_fields and n not in values]  # type: ignore[attr-defined]
        return cls(**{n: getattr(settings, n) for n in names}, **values)  # type: ignore[call-arg]


class ClipModelResource(_FromSettings, dg.ConfigurableResource):
    """An open_clip model: architecture, weights (an open_clip tag or a local checkpoint), device."""

    use_clip: bool = _setting("use_clip")  # False: tags only; nothing imports torch or looks for weights
    model_name: str = _setting("model_name")
    pretrained: Optional[str] = _setting("pretrained")
    device: str = _setting("device")
    precision: str = _setting("precision")
    runtime: str = _setting("runtime")
    clip_batch_size: int = _setting("clip_batch_size")
    num_workers: int = _setting("num_workers")
    allow_download: Optional[bool] = _setting("allow_download")

    @property
    def enabled(self) -> bool:  # the older name of `use_clip`
        return self.use_clip

    _model: Optional["ClipModel"] = PrivateAttr(default=None)
    _model_key: Optional[str] = PrivateAttr(default=None)

    def model_key(self) -> str:
        """The identity of the weights (`ViT-B-32/openai`, `ViT-B-32/file:<hash>`), found without
        loading them. Raises `ModelUnavailableError` when the weights are not available offline
        and `ConfigError` for an unknown model or a missing checkpoint file."""
        if self._model_key is None:
            from charattr_core.clip_loading import clip_model_key
            self._model_key = clip_model_key(self.model_name, self.pretrained, device=self.device, precision=self.precision,
                                             runtime=self.runtime, allow_download=self.allow_download)
        return self._model_key

    def unavailable_reason(self) -> Optional[str]:
        """None when the weights can be loaded, else why CLIP is not used (switched off, or the
        one-sentence `ModelUnavailableError`)."""
        if not self.use_clip:
            return CLIP_DISABLED
        try:
            self.model_key()
        except ModelUnavailableError as exc:
            return str(exc)
        return None

    def get(self) -> "ClipModel":
        """The model, loaded on first use and then kept for the rest of this process."""
        if self._model is None:
            self._model = _load_clip_once(self.model_name, self.pretrained, self.device, self.precision,
                                          self.runtime, self.allow_download)
        return self._model


@functools.lru_cache(maxsize=2)
def _load_clip_once(model_name: str, pretrained: Optional[str], device: str, precision: str, runtime: str,
                    allow_download: Optional[bool]) -> "ClipModel":
    """One load per process and configuration: `charattr run` executes several runs in one
    process, and the model (read-only at inference) serves them all."""
    from charattr_core.clip import load_clip
    return load_clip(model_name, pretrained, device=device, precision=precision, runtime=runtime,
                     allow_download=allow_download)


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

    def namespace(self) -> str:
        """The source's namespace (`<name>-<hash>`): its rows in the product table carry it."""
        from charattr_core.settings import source_namespace
        return source_namespace(self.path)

    def open(self) -> "Source":
        """The reader for `path` (raises `ConfigError` when it does not exist)."""
        from charattr_core.sources import open_source
        return open_source(self.path)


class PipelineSettings(_FromSettings, dg.ConfigurableResource):
    """Settings of the stages: vocabulary, fusion thresholds and strategy, input safety and the
    bounds the asset checks enforce."""

    vocabulary: Optional[str] = _setting("vocabulary")
    confidence_threshold: float = _setting("confidence_threshold")
    low_confidence_threshold: float = _setting("low_confidence_threshold")
    fusion_strategy: str = _setting("fusion_strategy")
    use_learned_policy: bool = _setting("use_learned_policy")
    max_image_pixels: int = _setting("max_image_pixels")
    stage_batch_size: int = _setting("stage_batch_size")
    max_failed_fraction: float = _setting("max_failed_fraction")  # blocking check on raw_images
    labels: Optional[str] = _setting("labels")
    max_eval_images: int = _setting("max_eval_images")  # the evaluation's bootstrap holds these in memory
    eval_bootstrap: int = _setting("eval_bootstrap")
    reports: Optional[str] = _setting("reports")

    # Older names, kept while other code moves to the names above.
    @property
    def batch_size(self) -> int:
        return self.stage_batch_size

    @property
    def labels_path(self) -> Optional[str]:
        return self.labels

    @property
    def reports_dir(self) -> Optional[str]:
        return self.reports

    def pipeline_config(self, **overrides) -> Settings:
        """The same settings as validated `Settings` (raises `ConfigError` when wrong)."""
        names = [n for n in type(self).model_fields if n not in ("reports", "labels")]
        return Settings.from_mapping({n: getattr(self, n) for n in names}, **overrides)

    def load_vocabulary(self) -> "Vocabulary":
        from charattr_core.schema import load_vocabulary
        return load_vocabulary(self.vocabulary)
