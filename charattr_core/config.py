"""Pipeline settings: one dataclass shared by the Python API, the CLI and the Dagster resources.

Validation happens here, once, before any work starts: a bad setting raises `ConfigError` with
one sentence that names the setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

FIXED_STRATEGIES = (
    "conservative_clip", "aggressive_clip", "tag_priority", "visual_priority",
    "confidence_weighted", "uncertainty_aware",
)
BASELINE_STRATEGIES = ("tags_only", "clip_only", "simple_average")
ALL_STRATEGIES = FIXED_STRATEGIES + BASELINE_STRATEGIES
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # int8: CPU only, opt-in
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")  # CPU inference runtimes (clip_runtime.py)
DEFAULT_DATA_DIR = Path("data")


@dataclass
class PipelineConfig:
    # vocabulary
    vocabulary: str | None = None  # path to an attributes.toml; None = the bundled default
    # fusion
    confidence_threshold: float = 0.8  # accept a source's answer at or above this
    low_confidence_threshold: float = 0.3  # below this a source's answer is not trusted
    fusion_strategy: str = "confidence_weighted"
    use_rl: bool = True  # use the learned policy when one is trained; else `fusion_strategy`
    policy_path: str | None = None  # a trained fusion policy (safetensors + JSON)
    probes_path: str | None = None  # trained attribute probes (safetensors + JSON)
    # caching / storage
    cache_results: bool = True
    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR / 'charattr.db'}"
    # CLIP
    use_clip: bool = True
    model_name: str = "ViT-B-32"
    pretrained: str | None = "openai"  # an open_clip tag or a local checkpoint path
    allow_download: bool | None = None  # fetch missing weights; None: env CHARATTR_ALLOW_DOWNLOAD decides (off)
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"  # CPU inference runtime; auto plans it from the CPU's features
    batch_size: int = 32
    num_workers: int = 2  # decode/preprocess threads that run beside inference
    # input safety
    max_image_pixels: int = 89_478_485  # Pillow's default bomb limit; larger images are refused
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0.0 <= self.low_confidence_threshold <= self.confidence_threshold <= 1.0:
            raise ConfigError(
                "Confidence thresholds must satisfy 0 <= low_confidence_threshold <= confidence_threshold <= 1 "
                f"(got {self.low_confidence_threshold} and {self.confidence_threshold}).")
        if self.fusion_strategy not in ALL_STRATEGIES:
            raise ConfigError(f"Unknown fusion_strategy {self.fusion_strategy!r}; choose one of: {', '.join(ALL_STRATEGIES)}.")
        if self.device not in DEVICES:
            raise ConfigError(f"Unknown device {self.device!r}; choose one of: {', '.join(DEVICES)}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"Unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}.")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"Unknown runtime {self.runtime!r}; choose one of: {', '.join(RUNTIMES)}.")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError("batch_size must be at least 1 and num_workers at least 0.")
        if self.max_image_pixels < 1:
            raise ConfigError("max_image_pixels must be a positive number of pixels.")
        if self.vocabulary is not None and not Path(self.vocabulary).is_file():
            raise ConfigError(f"Vocabulary file {self.vocabulary} does not exist.")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> "PipelineConfig":
        """Build from a dict (the seed's config style); unknown keys are an error, not ignored."""
        merged = {**(values or {}), **overrides}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"Unknown setting(s) {', '.join(unknown)}; known settings are: {', '.join(sorted(known))}.")
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra", None)
        return d
