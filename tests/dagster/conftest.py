"""Fixtures for the Dagster layer: a tiny synthetic source, settings that point every store at
tmp_path and use the tiny random-weight CLIP model, and a test instance."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from charattr_core.synthetic import write_demo_dataset
from charattr_dagster.definitions import build_definitions
from charattr_dagster.settings import Settings
from dagster_testing import IMAGES_PER_SHARD, SHARD_KEYS, make_settings

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards of three small drawn characters each, written once per session."""
    out = tmp_path_factory.mktemp("demo") / "sample"
    write_demo_dataset(out, n_images=IMAGES_PER_SHARD * len(SHARD_KEYS), n_shards=len(SHARD_KEYS), size=64, seed=0)
    return out


@pytest.fixture
def demo_source(demo_template: Path, tmp_path: Path) -> Path:
    """A private copy of the demo source (tests may add shards or corrupt images)."""
    return Path(shutil.copytree(demo_template, tmp_path / "sample"))


@pytest.fixture
def settings(demo_source: Path, tmp_path: Path) -> Settings:
    return make_settings(demo_source, tmp_path)


@pytest.fixture
def defs(settings: Settings) -> dg.Definitions:
    return build_definitions(settings)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst
