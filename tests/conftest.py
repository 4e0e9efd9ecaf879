"""Shared pytest fixtures. Each section belongs to one module's tests; keep sections delimited."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

# ---- results store (charattr_core/store.py): `store_url` -------------------------------------
POSTGRES_URL_ENV = "CHARATTR_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty results database: a SQLite file under tmp_path, or a fresh schema on the
    PostgreSQL server named by $CHARATTR_TEST_POSTGRES_URL (skipped when that is unset)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'charattr.db'}"
        return
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"PostgreSQL store tests need {POSTGRES_URL_ENV}=postgresql://user:password@host/db (unset here)")
    import sqlalchemy as sa

    url = sa.engine.make_url(base)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    schema = f"charattr_test_{uuid.uuid4().hex[:12]}"  # one schema per test: tests never see each other's rows
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()
# ---- end of results store section -----------------------------------------------------------


# ---- CLIP inference paths (charattr_core/clip_runtime.py): a private model cache -------------
@pytest.fixture(scope="session", autouse=True)
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Converted models and inference checks go to a temporary folder, never the user's cache
    (subprocesses that the tests start inherit it)."""
    from charattr_core.clip_runtime import MODEL_CACHE_ENV

    previous = os.environ.get(MODEL_CACHE_ENV)
    os.environ[MODEL_CACHE_ENV] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if previous is None:
        os.environ.pop(MODEL_CACHE_ENV, None)
    else:
        os.environ[MODEL_CACHE_ENV] = previous
# ---- end of CLIP inference paths section ----------------------------------------------------


# ---- pipeline / CLI: a small synthetic source and the tiny CLIP model -----------------------
TINY_MODEL = {"model_name": "charattr-tiny", "pretrained": None}


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic characters in 2 shards, with noisy sidecar tags and ground truth (read-only)."""
    from charattr_core.synthetic import write_demo_dataset

    out = tmp_path_factory.mktemp("demo") / "sample"
    write_demo_dataset(out, n_images=24, n_shards=2, seed=7, size=128)
    return out


@pytest.fixture
def tiny_config(tmp_path: Path) -> dict:
    """Pipeline settings for tests: tiny random-weight CLIP, a private SQLite cache."""
    return {**TINY_MODEL, "database_url": f"sqlite:///{tmp_path / 'cache.db'}", "clip_batch_size": 8}
# ---- end of pipeline / CLI section ----------------------------------------------------------
