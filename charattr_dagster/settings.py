"""Deployment settings of the Dagster layer, read once from the environment.

Definitions are built at load time, and two things must agree: the resource configuration that
the assets run with and the `code_version`s that the UI uses to mark assets stale. Both are
derived from one `Settings` value, so changing `CHARATTR_MODEL` or `CHARATTR_VOCABULARY` changes
the code versions of every asset downstream of it.

| variable                      | default                          |
|-------------------------------|----------------------------------|
| CHARATTR_DATA_DIR             | `data` (relative to the cwd)     |
| CHARATTR_SOURCE               | `<data>/sample`                  |
| CHARATTR_USE_CLIP             | `1` (`0`: tags only, no torch)   |
| CHARATTR_MODEL                | `ViT-B-32`                       |
| CHARATTR_PRETRAINED           | `openai` (`none` = random init)  |
| CHARATTR_VOCABULARY           | the bundled attributes.toml      |
| CHARATTR_DATABASE_URL         | `sqlite:///<data>/charattr.db`   |
| CHARATTR_WAREHOUSE            | `<data>/warehouse`               |
| CHARATTR_REPORTS              | `<data>/reports`                 |
| CHARATTR_DEVICE               | `auto`                           |
| CHARATTR_BATCH_SIZE           | `32`                             |
| CHARATTR_FUSION_STRATEGY      | `confidence_weighted`            |
| CHARATTR_MAX_FAILED_FRACTION  | `0.5` (blocking check bound)     |
| CHARATTR_SHARDS_PER_RUN       | `1` (partitions batched per run) |
| CHARATTR_MAX_IMAGE_PIXELS     | `89478485` (decompression bombs) |
| CHARATTR_LABELS               | none (user corrections file)     |

Paths are made absolute here, so a run worker started from another directory writes to the
same place as the code server that loaded the definitions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from charattr_core.errors import ConfigError

NO_WEIGHTS = ("", "none", "null")  # CHARATTR_PRETRAINED values meaning "no pretrained weights"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"Environment variable {name} must be a number (got {raw!r}).") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"Environment variable {name} must be 1 or 0 (got {env.get(name)!r}).")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _float(env, name, default)
    if value != int(value) or value < 1:
        raise ConfigError(f"Environment variable {name} must be a positive whole number (got {env.get(name)!r}).")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """Where the data lives and which model/vocabulary produce it."""

    source: str
    use_clip: bool = True
    model_name: str = "ViT-B-32"
    pretrained: str | None = "openai"
    vocabulary: str | None = None
    database_url: str = "sqlite:///data/charattr.db"
    warehouse: str = "data/warehouse"
    reports: str = "data/reports"
    device: str = "auto"
    batch_size: int = 32
    fusion_strategy: str = "confidence_weighted"
    max_failed_fraction: float = 0.5
    shards_per_run: int = 1  # >1: fewer runs, but lineage shared per run (README, "Dagster UI")
    max_image_pixels: int = 89_478_485
    labels: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read the CHARATTR_* variables (see the module docstring); missing ones take defaults."""
        env = os.environ if env is None else env
        data = Path(env.get("CHARATTR_DATA_DIR") or "data").resolve()
        pretrained = env.get("CHARATTR_PRETRAINED", "openai")
        vocabulary = env.get("CHARATTR_VOCABULARY") or None
        fraction = _float(env, "CHARATTR_MAX_FAILED_FRACTION", 0.5)
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"CHARATTR_MAX_FAILED_FRACTION must lie between 0 and 1 (got {fraction}).")
        return cls(
            source=str(Path(env.get("CHARATTR_SOURCE") or data / "sample").resolve()),
            use_clip=_bool(env, "CHARATTR_USE_CLIP", True),
            model_name=env.get("CHARATTR_MODEL") or "ViT-B-32",
            pretrained=None if pretrained.strip().lower() in NO_WEIGHTS else pretrained,
            vocabulary=str(Path(vocabulary).resolve()) if vocabulary else None,
            database_url=env.get("CHARATTR_DATABASE_URL") or f"sqlite:///{data / 'charattr.db'}",
            warehouse=str(Path(env.get("CHARATTR_WAREHOUSE") or data / "warehouse").resolve()),
            reports=str(Path(env.get("CHARATTR_REPORTS") or data / "reports").resolve()),
            device=env.get("CHARATTR_DEVICE") or "auto",
            batch_size=_int(env, "CHARATTR_BATCH_SIZE", 32),
            fusion_strategy=env.get("CHARATTR_FUSION_STRATEGY") or "confidence_weighted",
            max_failed_fraction=fraction,
            shards_per_run=_int(env, "CHARATTR_SHARDS_PER_RUN", 1),
            max_image_pixels=_int(env, "CHARATTR_MAX_IMAGE_PIXELS", 89_478_485),
            labels=str(Path(env["CHARATTR_LABELS"]).resolve()) if env.get("CHARATTR_LABELS") else None,
        )

    def to_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The CHARATTR_* variables that make `from_env` give these settings, for those that differ
        from what `base` (default: the current environment) gives: what `dagster dev` needs in
        order to load the same definitions as a `charattr run` with command-line options."""
        current = Settings.from_env(base)
        names = {"source": "CHARATTR_SOURCE", "use_clip": "CHARATTR_USE_CLIP", "model_name": "CHARATTR_MODEL", "pretrained": "CHARATTR_PRETRAINED",
                 "vocabulary": "CHARATTR_VOCABULARY", "database_url": "CHARATTR_DATABASE_URL",
                 "warehouse": "CHARATTR_WAREHOUSE", "reports": "CHARATTR_REPORTS", "device": "CHARATTR_DEVICE",
                 "batch_size": "CHARATTR_BATCH_SIZE", "fusion_strategy": "CHARATTR_FUSION_STRATEGY",
                 "max_failed_fraction": "CHARATTR_MAX_FAILED_FRACTION", "shards_per_run": "CHARATTR_SHARDS_PER_RUN",
                 "max_image_pixels": "CHARATTR_MAX_IMAGE_PIXELS", "labels": "CHARATTR_LABELS"}
        def text(field: str) -> str:
            value = getattr(self, field)
            return "none" if value is None else str(int(value)) if isinstance(value, bool) else str(value)

        return {env: text(field) for field, env in names.items() if getattr(self, field) != getattr(current, field)}

    def with_source(self, source: str | Path) -> "Settings":
        return replace(self, source=str(Path(source).resolve()))
