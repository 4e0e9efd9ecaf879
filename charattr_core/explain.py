"""One image's answer with the evidence behind it: what each source said, for the web app and notebooks.

    with create_pipeline(config) as pipe:
        explained = explain_image(pipe, "a.png", tags="1girl blonde_hair")
        explained.signals_line()      # "Signals: tags (2 tags), CLIP charattr-tiny/random" or "... tags only"
        explained.rows()              # per attribute: value, confidence, strategy, tags, CLIP's top alternatives

The fused answer comes from `Pipeline.process_items` (through the results cache), as in
`extract_from_image`; the
per-source answers are the same cached stages (tag parses, embeddings) read back, plus zero-shot
scores and probe predictions computed from the embedding as fusion computes them. Nothing here is
a second implementation of a stage.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import ConfigError
from .records import AttributeEstimate, FusedAttributes, ImageRecord, SourceItem
from .schema import UNKNOWN
from .stages import STAGE_FUSED


@dataclass
class Explanation:
    """The fused answer for one image, and what each source (tags, clip, probe) answered."""

    fused: FusedAttributes
    sources: dict[str, dict[str, AttributeEstimate]]  # source -> attribute -> estimate
    tags: str | None
    tag_count: int
    clip_model: str | None  # model key when CLIP was used
    clip_unavailable: str | None  # why not, when it was not
    clip_disabled: bool
    policy: str | None  # the learned policy's version when one chose the strategies
    labels: dict[str, str]  # attribute key -> display label
    from_cache: bool = False  # the fused answer was found in the results cache (same bytes, tags, versions)

    @property
    def tags_only(self) -> bool:
        return self.clip_model is None

    def signals_line(self) -> str:
        """One plain sentence: which signals this answer had."""
        used = [f"tags ({self.tag_count} tags)" if self.tags else "no tags"]
        if self.clip_model:
            used.append(f"CLIP {self.clip_model}")
        if "probe" in self.sources:
            used.append("attribute probes")
        decided = f"learned policy {self.policy}" if self.policy else f"fixed strategy {self.fused.strategy}"
        line = f"Signals: {', '.join(used)}; decided by {decided}."
        if self.clip_disabled:
            return f"CLIP turned off: tags only. {line}"
        if self.clip_unavailable:
            return f"CLIP weights not found: tags only. {line} Why: {self.clip_unavailable}"
        return line

    def rows(self, top_k: int = 3) -> list[dict[str, Any]]:
        """One row per attribute, in vocabulary order, with plain-text evidence."""
        out = []
        clip = self.sources.get("clip", {})
        tags = self.sources.get("tags", {})
        for key, est in self.fused.attributes.items():
            tag_est = tags.get(key)
            out.append({
                "attribute": self.labels.get(key, key),
                "value": ", ".join(v.replace("_", " ") for v in est.values) or UNKNOWN,
                "confidence": round(float(est.confidence), 3),
                "strategy": self.fused.strategies.get(key, self.fused.strategy),
                "sources": ", ".join(e for e in est.evidence if e in ("tags", "clip", "probe")
                                     or e.startswith(("conflict:", "abstain:"))) or "-",
                "tags": ", ".join(tag_est.evidence) if tag_est is not None and tag_est.evidence else "-",
                "clip_top": top_alternatives(clip.get(key), top_k) if clip else "-",
            })
        return out


def top_alternatives(estimate: AttributeEstimate | None, k: int = 3) -> str:
    """`"blonde 0.41, brown 0.22, black 0.12"`: a source's k most probable values."""
    if estimate is None or not estimate.scores:
        return "-"
    best = sorted(estimate.scores.items(), key=lambda kv: -kv[1])[:k]
    return ", ".join(f"{name.replace('_', ' ')} {score:.2f}" for name, score in best)


def _image_bytes(image: Image.Image | str | Path | bytes) -> tuple[bytes, str]:
    """The bytes `Pipeline.extract_from_image` hashes, and their uri, for the same inputs."""
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), "memory://image"
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), "memory://image"
    path = Path(image)
    return path.read_bytes(), str(path.resolve())


def explain_image(pipe, image: Image.Image | str | Path | bytes, tags: str | None = None, *,
                  name: str | None = None) -> Explanation:
    """The fused answer for `image` (as `pipe.extract_from_image` gives it, through the cache) and the
    per-source answers behind it. `name` is how errors refer to the image (default: its path).

    Raises `ConfigError` with one sentence when the image cannot be processed, as the CLI says it.
    """
    from .learning import visual_estimates
    from .pipeline import RunSummary

    if isinstance(image, (str, Path)) and not Path(image).is_file():
        raise ConfigError(f"Image file {image} does not exist.")
    tags = tags.strip() if isinstance(tags, str) and tags.strip() else None
    data, uri = _image_bytes(image)
    uri = name or uri
    summary = RunSummary()
    record, fused = pipe.process_items([SourceItem(uri=uri, shard="adhoc", data=data, tags=tags)], summary)[0]
    if fused is None:
        raise ConfigError(f"Image {uri} cannot be processed: {record.error}.")
    record = ImageRecord(image_id=fused.image_id, source_uri=uri, shard="adhoc", raw_tags=tags)
    # The cached stages again: both were stored when the image was first fused, so this reads them back.
    parses, embeddings = pipe._signals([record], {uri: data}, pipe.versions(), RunSummary())
    parse = parses.get(uri)
    embedding = embeddings.get(record.image_id)
    clip_est, probe_est = visual_estimates([record.image_id], [embedding], pipe._zero_shot(), pipe.probes)
    sources: dict[str, dict[str, AttributeEstimate]] = {}
    if parse is not None:
        sources["tags"] = parse.estimates
    if record.image_id in clip_est:
        sources["clip"] = clip_est[record.image_id]
    if record.image_id in probe_est:
        sources["probe"] = probe_est[record.image_id]
    return Explanation(
        fused=fused, sources=sources, tags=tags, tag_count=parse.tag_count if parse is not None else 0,
        clip_model=pipe.clip_model_key if embedding is not None else None,
        clip_unavailable=pipe.clip_unavailable, clip_disabled=not pipe.config.use_clip,
        policy=pipe.policy.version if pipe.policy is not None else None, labels=pipe.vocabulary.labels(),
        from_cache=summary.stages[STAGE_FUSED].skipped == 1)
