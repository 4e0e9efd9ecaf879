"""`create_pipeline(config)`: every stage in-process, for scripts, notebooks and the CLI.

The same stage functions the Dagster assets call, chained over streamed batches:

    reader -> inspect (raw_images) -> tag parse + CLIP embed (cached) -> zero-shot / probes
           -> fuse (cached) -> writer

A re-run looks up each batch's fused results by content hash first, so images already done
are neither decoded nor encoded again; the CLIP model is loaded only when an image misses the
cache (its key, which the stage versions need, is known from the configuration), and a run with
CLIP disabled never imports torch.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import Image

from .batching import batched
from .settings import Settings
from .errors import ConfigError, ModelUnavailableError, NoSignalError
from .records import FusedAttributes, ImageRecord, SourceItem, TagParse, tags_digest
from .schema import load_vocabulary
from .sources import open_source
from .sources.hashing import content_hash
from .sources.validate import inspect_image
from .stages import (EMBEDDING_CODEC, STAGE_CLIP, STAGE_FUSED, STAGE_TAGS, TAG_PARSE_CODEC,
                     Codec, StageCounts, fuse_batch, fused_stage_version, fused_versions, ok_records, run_cached)
from .tags import TagParser, parse_tags

log = logging.getLogger("charattr")
class _VersionsChanged(Exception):
    """Raised inside a batch when the CLIP model could not be loaded after its key was known."""


@dataclass
class RunSummary:
    """What one run did, per stage; printed by the CLI and returned to API callers."""

    images: int = 0
    failed: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    stages: dict[str, StageCounts] = field(default_factory=lambda: {
        STAGE_TAGS: StageCounts(), STAGE_CLIP: StageCounts(), STAGE_FUSED: StageCounts()})
    notes: list[str] = field(default_factory=list)
    output: str | None = None
    signals: dict[str, str] = field(default_factory=dict)  # tags/clip/probes/policy -> used, or why not

    def record_failure(self, record: ImageRecord) -> None:
        self.failed += 1
        reason = (record.error or "unknown error").split(":")[0]
        self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "failed": self.failed, "failure_reasons": self.failure_reasons,
                "stages": {k: v.to_dict() for k, v in self.stages.items()}, "notes": self.notes,
                "output": self.output, "signals": self.signals}


class Pipeline:
    """Holds the loaded vocabulary, models and store; processes images in streamed batches."""

    def __init__(self, config: Settings, *, clip_model=None):
        from .fusion import Thresholds  # fusion imports numpy-heavy modules; keep import order simple

        self.config = config
        self.vocabulary = load_vocabulary(config.vocabulary)
        self.parser = TagParser(self.vocabulary)
        self.thresholds = Thresholds(accept=config.confidence_threshold, low=config.low_confidence_threshold)
        self.store = self._open_store() if config.cache_results else None
        self._clip = clip_model
        self._clip_key: str | None = clip_model.model_key if clip_model is not None else None
        self._artefacts_for: tuple | None = None  # (model key, probes, policy, SignalsUsed)
        self._check_artefact_paths()
        self.clip_unavailable: str | None = None if config.use_clip else "CLIP disabled by configuration"
        self._text_embeddings = None

    # -- construction helpers --------------------------------------------------------------
    def _open_store(self):
        from .store import ResultStore  # it creates a SQLite file's folder (after expanding ~), or says why not
        return ResultStore(self.config.database_url)

    def _check_artefact_paths(self) -> None:
        """A probes or policy path that names nothing stops the run now, with one sentence (whether
        the artefact fits this run's model is decided later, once the model key is known)."""
        from .artifacts import artifact_paths

        for path, stem, what in ((self.config.probes_path, "probes", "attribute probes"),
                                 (self.config.policy_path if self.config.use_learned_policy else None, "policy", "fusion policy")):
            if path and not all(p.is_file() for p in artifact_paths(path, stem)):
                tensors, meta = artifact_paths(path, stem)
                raise ConfigError(f"No {what} at {path} (expected {meta.name} and {tensors.name}).")

    @property
    def probes(self):
        """Trained probes, if configured and made for this run's CLIP model and vocabulary."""
        return self._artefacts()[0]

    @property
    def policy(self):
        """The learned fusion policy, if configured, switched on and made for this run's CLIP model."""
        return self._artefacts()[1]

    def _artefacts(self):
        """(probes, policy, SignalsUsed) for the CLIP model in use now (it may turn out unavailable
        mid-run, and what was valid for it is then not)."""
        from .artifact_use import SignalsUsed, usable_policy, usable_probes

        key = self.clip_model_key
        if self._artefacts_for is None or self._artefacts_for[0] != key:
            signals = SignalsUsed(clip_model=key, strategy=self.config.fusion_strategy)
            if key is None:
                signals.missing["clip"] = self.clip_unavailable or "CLIP unavailable"
            probes = policy = None
            if self.config.probes_path:
                probes, why = usable_probes(self.config.probes_path, self.vocabulary, key)
                signals.probes = probes.probes_version if probes is not None else None
                if why:
                    signals.refuse("probes", why)
            if self.config.use_learned_policy and self.config.policy_path:
                policy, why = usable_policy(self.config.policy_path, self.vocabulary, key)
                if policy is not None:
                    signals.use_policy(policy)
                if why:
                    signals.refuse("policy", why)
            self._artefacts_for = (key, probes, policy, signals)
        return self._artefacts_for[1:]

    def signals_used(self):
        """`SignalsUsed`: which signals this run fuses, and why one is missing."""
        return self._artefacts()[2]

    @property
    def clip(self):
        """The CLIP model, loaded on first use; None (with `clip_unavailable` set) if it cannot be."""
        if self._clip is None and self.clip_unavailable is None:
            from .clip import load_clip
            try:
                self._clip = load_clip(self.config.model_name, self.config.pretrained,
                                       device=self.config.device, precision=self.config.precision,
                                       runtime=self.config.runtime, allow_download=self.config.allow_download)
            except ModelUnavailableError as exc:
                self.clip_unavailable = str(exc)
                self._clip_key = None
                # INFO, not WARNING: the run summary and every result's `notes` carry the reason.
                log.info("CLIP unavailable, continuing with the remaining signals: %s", exc)
            else:
                self._clip_key = self._clip.model_key
        return self._clip

    @property
    def clip_model_key(self) -> str | None:
        """The CLIP model's key, known without loading it when the weights are at hand (so a re-run
        whose results are all cached never loads the model); None when CLIP is off or unavailable."""
        if self._clip_key is None and self.clip_unavailable is None:
            from .clip_loading import clip_model_key
            try:
                # Never download just to name the weights: if they are not here, loading decides.
                self._clip_key = clip_model_key(self.config.model_name, self.config.pretrained, device=self.config.device,
                                                precision=self.config.precision, runtime=self.config.runtime,
                                                allow_download=False)
            except ModelUnavailableError:
                return self.clip.model_key if self.clip is not None else None
        return self._clip_key

    # -- versions ----------------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        return fused_versions(self.vocabulary, self.clip_model_key, self.probes, self.policy,
                              self.config.fusion_strategy, self.thresholds)

    def fused_version(self) -> str:
        return fused_stage_version(self.versions())

    # -- the work ----------------------------------------------------------------------------
    def _zero_shot(self):
        if self.clip is None:
            return None
        from .clip import zero_shot
        if self._text_embeddings is None:
            self._text_embeddings = self.clip.text_embeddings(self.vocabulary)
        return lambda matrix: zero_shot(matrix, self.vocabulary, self._text_embeddings, self.clip.logit_scale)

    def _fused_codec(self) -> Codec[FusedAttributes | None]:
        return Codec(encode=lambda f: (f.to_record(), None), decode=lambda _i, p, _b: FusedAttributes.from_record(p),
                     is_failure=lambda f: f is None)

    def process_items(self, items: list[SourceItem], summary: RunSummary | None = None
                      ) -> list[tuple[ImageRecord, FusedAttributes | None]]:
        """One batch: validate, parse, embed, fuse. Returns (record, fused or None if failed).

        The fused cache is consulted first, by content hash: an image already fused under the
        same versions is neither decoded nor encoded again.
        """
        summary = summary if summary is not None else RunSummary()
        records: dict[str, ImageRecord] = {}  # by uri: what validation said about each new image

        def compute_fused(keyed: list[tuple[str, SourceItem]]) -> list[FusedAttributes | None]:
            if keyed and STAGE_CLIP in versions and self.clip is None:
                # The weights were named (the versions say CLIP) but cannot be loaded after all:
                # nothing may be stored under versions that claim CLIP; start the batch again.
                raise _VersionsChanged
            for _id, item in keyed:
                records[item.uri] = inspect_image(item, self.config.max_image_pixels)
            good = ok_records(records[item.uri] for _id, item in keyed)
            data_by_uri = {item.uri: item.data for _id, item in keyed}
            fused = {f.source_uri: f for f in self._fuse_records(good, data_by_uri, versions, summary)}
            return [fused.get(item.uri) for _key, item in keyed]

        # Items whose bytes could not be read have no id and go straight to validation's verdict.
        keyed = [(content_hash(it.data), it) for it in items if it.data is not None and it.error is None]
        while True:  # at most twice: a second pass only after CLIP turned out to be unavailable
            versions, fused_version = self.versions(), self.fused_version()
            try:
                # Fused rows depend on the tags too: edited tags are fused again.
                fused, counts = run_cached(keyed, lambda pair: pair[0], compute_fused, self._fused_codec(),
                                           self.store, STAGE_FUSED, fused_version,
                                           tags_digest=lambda pair: tags_digest(pair[1].tags))
                break
            except _VersionsChanged:
                records.clear()
        summary.stages[STAGE_FUSED] += counts
        summary.signals = self.signals_used().describe()
        fused_by_uri = {item.uri: f for (_id, item), f in zip(keyed, fused)}
        out = []
        for item in items:
            f = fused_by_uri.get(item.uri)
            record = records.get(item.uri)
            if record is None and f is not None:  # a cache hit: validated when it was first fused
                record = ImageRecord(image_id=f.image_id, source_uri=item.uri, shard=item.shard, raw_tags=item.tags)
            elif record is None:
                record = inspect_image(item, self.config.max_image_pixels)
            if not record.ok:
                summary.record_failure(record)
            if f is not None and f.source_uri != item.uri:  # the same bytes may live at several paths
                f = dataclasses.replace(f, source_uri=item.uri)
            out.append((record, f))
        summary.images += len(items)
        return out

    def _fuse_records(self, batch: list[ImageRecord], data_by_uri: Mapping[str, bytes], versions: dict[str, str],
                      summary: RunSummary) -> list[FusedAttributes]:
        """Tag parses and embeddings (each through its own cache), then fusion."""
        clip_errors: dict[str, tuple[str, ...]] = {}
        parses, embeddings = self._signals(batch, data_by_uri, versions, summary, clip_errors)
        notes = ((f"clip unavailable: {self.clip_unavailable}",) if self.clip_unavailable else ()) \
            + self.signals_used().notes()
        return fuse_batch(batch, parses, embeddings, vocabulary=self.vocabulary,
                          zero_shot_scorer=self._zero_shot(), probes=self.probes, policy=self.policy,
                          strategy=self.config.fusion_strategy, thresholds=self.thresholds,
                          versions=versions, notes=notes, image_notes=clip_errors)

    def _signals(self, batch: list[ImageRecord], data_by_uri: Mapping[str, bytes], versions: dict[str, str],
                 summary: RunSummary, clip_errors: dict[str, tuple[str, ...]] | None = None
                 ) -> tuple[dict[str, TagParse], dict[str, np.ndarray]]:
        """The per-image stages of a batch of ok records: tag parses and embeddings by image_id
        (and, into `clip_errors`, why an image has no embedding)."""
        parses = self.tag_parses(batch, versions, summary)
        embeddings: dict[str, np.ndarray] = {}
        if self.clip is not None and batch:
            from .clip import embed_images, verified_loader
            # verified: bytes found by uri must be the ones the record's id was hashed from
            embs, clip_counts = run_cached(
                batch, lambda r: r.image_id,
                lambda rs: embed_images(rs, self.clip, verified_loader(lambda r: data_by_uri[r.source_uri]),
                                        batch_size=self.config.clip_batch_size, num_workers=self.config.num_workers),
                EMBEDDING_CODEC, self.store, STAGE_CLIP, versions[STAGE_CLIP])
            summary.stages[STAGE_CLIP] += clip_counts
            embeddings = {e.image_id: e.embedding for e in embs if e.embedding is not None}
            if clip_errors is not None:
                clip_errors.update((e.image_id, (f"clip failed: {e.error}",)) for e in embs if e.embedding is None)
        return {r.source_uri: p for r, p in zip(batch, parses)}, embeddings

    def tag_parses(self, batch: list[ImageRecord], versions: dict[str, str] | None = None,
                   summary: RunSummary | None = None) -> list[TagParse]:
        """The tag parses of ok records, in order, through the results cache (keyed by image and tags)."""
        versions = versions or self.versions()
        parses, tag_counts = run_cached(batch, lambda r: r.image_id, lambda rs: parse_tags(rs, self.parser),
                                        TAG_PARSE_CODEC, self.store, STAGE_TAGS, versions[STAGE_TAGS],
                                        tags_digest=lambda r: r.tags_digest)
        if summary is not None:
            summary.stages[STAGE_TAGS] += tag_counts
        return parses

    def iter_signals(self, path: str | Path, limit: int | None = None, summary: RunSummary | None = None,
                     batch_size: int | None = None) -> Iterator[list["Signals"]]:
        """Batches of per-image signals (record, tag parse, embedding) for the learning stages."""
        from .learning import Signals

        summary = summary if summary is not None else RunSummary()
        batch_size = batch_size or self.config.stage_batch_size
        versions = self.versions()
        for items in batched(self._items(path, limit), batch_size):
            records = [inspect_image(item, self.config.max_image_pixels) for item in items]
            summary.images += len(records)
            for r in records:
                if not r.ok:
                    summary.record_failure(r)
            good = ok_records(records)
            parses, embeddings = self._signals(good, {it.uri: it.data for it in items}, versions, summary)
            yield [Signals(r, parses.get(r.source_uri), embeddings.get(r.image_id)) for r in good]

    def _items(self, path: str | Path, limit: int | None) -> Iterator[SourceItem]:
        source = open_source(path)
        n = 0
        for shard in source.shards():
            for item in source.read(shard):
                if limit is not None and n >= limit:
                    return
                n += 1
                yield item

    def iter_results(self, path: str | Path, limit: int | None = None, summary: RunSummary | None = None,
                     batch_size: int | None = None) -> Iterator[tuple[ImageRecord, FusedAttributes | None]]:
        """Stream (record, fused) pairs over every shard of a source; at most `limit` images."""
        summary = summary if summary is not None else RunSummary()
        for batch in batched(self._items(path, limit), batch_size or self.config.stage_batch_size):
            yield from self.process_items(batch, summary)

    def process_batch(self, path: str | Path, limit: int | None = None) -> list[FusedAttributes]:
        """The seed's API: fused results for the images under `path` (failed images left out)."""
        return [f for _r, f in self.iter_results(path, limit=limit) if f is not None]

    def extract_from_image(self, image: Image.Image | str | Path | bytes, tags: str | list[str] | None = None,
                           *, require_signal: bool = False) -> FusedAttributes:
        """Attributes of one image (a PIL image, a path, or encoded bytes) with optional tags.

        A path without `tags` uses the image's sidecar tags file, by the rules of the folder
        reader (`charattr batch`). With `require_signal`, an image with no tags while CLIP is not
        used raises `NoSignalError` instead of answering `unknown` for every attribute."""
        if isinstance(image, Image.Image):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            item = SourceItem(uri="memory://image", shard="adhoc", data=buf.getvalue())
        elif isinstance(image, (bytes, bytearray)):
            item = SourceItem(uri="memory://image", shard="adhoc", data=bytes(image))
        else:
            p = Path(image)
            if not p.is_file():
                raise ConfigError(f"Image file {p} does not exist.")
            if tags is None:
                from .sources.single import read_image_file
                item = read_image_file(p)
            else:
                item = SourceItem(uri=str(p.resolve()), shard="adhoc", data=p.read_bytes())
        if tags is not None:
            item.tags = ", ".join(tags) if isinstance(tags, (list, tuple)) else tags
        if require_signal and item.error is None and not (item.tags or "").strip() and self.clip_model_key is None:
            # A file that is not a usable image says so first: that is what the user must fix.
            checked = inspect_image(item, self.config.max_image_pixels)
            if not checked.ok:
                raise ConfigError(f"Image {item.uri} cannot be processed: {checked.error}.")
            raise NoSignalError(f"No signal for {item.uri}: it has no tags (none given, and no sidecar tags file) "
                                f"and CLIP is not used ({self.clip_unavailable}), so every attribute would be unknown.")
        record, fused = self.process_items([item])[0]
        if fused is None:
            raise ConfigError(f"Image {item.uri} cannot be processed: {record.error}.")
        return fused

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def create_pipeline(config: Settings | Mapping[str, Any] | None = None, **overrides: Any) -> Pipeline:
    """Build a pipeline from `Settings` or a plain dict of settings (the seed's keys, e.g.
    confidence_threshold, fusion_strategy, use_rl, cache_results); an unknown key is a
    `ConfigError`. The environment is not read (`Settings.from_env()` does that)."""
    if isinstance(config, Settings):
        cfg = config.replace(**overrides) if overrides else config
    else:
        cfg = Settings.from_mapping(config or {}, **overrides)
    return Pipeline(cfg)

