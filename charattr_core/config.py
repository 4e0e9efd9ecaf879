"""Compatibility names: the settings now live in `charattr_core.settings` (one model for the
Python API, the command line and the Dagster layer). `PipelineConfig` is that model."""

from .settings import (ALL_STRATEGIES, BASELINE_STRATEGIES, DEFAULT_DATA_DIR, DEVICES, FIXED_STRATEGIES,  # noqa: F401
                       PRECISIONS, RUNTIMES, PipelineConfig, Settings)
