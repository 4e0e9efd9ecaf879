"""Code versions of the assets, computed when the definitions load, from the same `Settings`
that configure the resources. They mirror the stage versions that key the results cache
(vocabulary fingerprint, CLIP model key, code versions), so changing the model or the
vocabulary marks the dependent assets stale in the UI.

Settings changed later in the launchpad still change the cache keys (computed at run time from
the resources) but not these code versions; configure deployments through the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from charattr_core.errors import ModelUnavailableError

from .settings import Settings

RAW_IMAGES_CODE_VERSION = "raw-1"  # bump when validation (charattr_core.sources.validate) changes its verdicts
REPORT_CODE_VERSION = "report-1"
CLIP_DISABLED_VERSION = "clip-disabled"


def raw_images_stage_version(max_image_pixels: int) -> str:
    """The cache key of validated image facts: the pixel limit decides which images pass."""
    return f"{RAW_IMAGES_CODE_VERSION}+px{max_image_pixels}"


def model_key_of(model_name: str, pretrained: str | None, device: str = "auto", precision: str = "auto",
                 runtime: str = "auto") -> str:
    """The CLIP model key without loading (or ever downloading) weights; for weights that are not
    available offline, the key they will have (`<model>/<tag>`). Raises `ConfigError` for an
    unknown model, tag or checkpoint file."""
    from charattr_core.clip_loading import clip_model_key

    try:
        return clip_model_key(model_name, pretrained, device=device, precision=precision, runtime=runtime,
                              allow_download=False)
    except ModelUnavailableError:
        return f"{model_name}/{pretrained}"


@dataclass(frozen=True)
class CodeVersions:
    raw_images: str
    tag_parses: str
    clip_embeddings: str
    attribute_probes: str
    fusion_policy: str
    fused_attributes: str
    attribute_report: str


def code_versions(settings: Settings) -> CodeVersions:
    """Every asset's code version for these settings (raises `ConfigError` for a bad model name,
    vocabulary or checkpoint path). fused_attributes' is `stages.fused_settings_version` (its
    `fused_code_version`), the same string that begins the stage version in its rows and metadata."""
    from charattr_core.clip_version import clip_stage_version
    from charattr_core.fusion import Thresholds
    from charattr_core.policy import POLICY_CODE_VERSION
    from charattr_core.probes import PROBES_CODE_VERSION
    from charattr_core.schema import load_vocabulary
    from charattr_core.stages import fused_settings_version
    from charattr_core.tags import tags_stage_version

    vocabulary = load_vocabulary(settings.vocabulary)
    vocab = f"vocab-{vocabulary.fingerprint}"
    # Without CLIP, nothing may import torch (the model key needs open_clip's registry).
    model_key = model_key_of(settings.model_name, settings.pretrained, settings.device, settings.precision,
                             settings.runtime) if settings.use_clip else None
    clip = clip_stage_version(model_key) if model_key else CLIP_DISABLED_VERSION
    tags = tags_stage_version(vocabulary)
    # The thresholds decide the probes' training labels, the policy's examples, every fused value
    # and so the report: changing them marks those assets stale.
    thresholds = Thresholds(accept=settings.confidence_threshold, low=settings.low_confidence_threshold)
    threshold_text = f"t{thresholds.accept}/{thresholds.low}"
    fused = fused_settings_version(vocabulary, model_key, settings.fusion_strategy, thresholds)
    if not settings.use_learned_policy:  # fusion by the fixed strategy even where a policy is trained
        fused += "+no-policy"
    return CodeVersions(
        raw_images=raw_images_stage_version(settings.max_image_pixels),
        tag_parses=tags,
        clip_embeddings=clip,
        attribute_probes=f"probes-{PROBES_CODE_VERSION}+{clip}+{vocab}+{threshold_text}",
        fusion_policy=f"policy-{POLICY_CODE_VERSION}+{clip}+{vocab}+{settings.fusion_strategy}+{threshold_text}",
        # The key of fused rows minus the trained artefacts (probes and policy have their own assets).
        fused_attributes=fused,
        attribute_report=f"{REPORT_CODE_VERSION}+{fused.split('+')[-1]}",
    )
