"""PostgreSQL end to end: the pipeline, the `charattr` command and the Dagster layer on a real
server (the one `.ci/run` starts; `CHARATTR_TEST_POSTGRES_URL`), with the server's password
never shown anywhere; and a Dagster instance stored in PostgreSQL exactly as docs/postgres.md
configures it. The pipeline test also runs on SQLite; the rest skip without a server.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent / "dagster"))  # the Dagster tests' helpers (dagster_testing)

from charattr_core.pipeline import RunSummary, create_pipeline
from charattr_core.store import ResultStore
from dagster_testing import make_settings, register, run_job

POSTGRES_URL_ENV = "CHARATTR_TEST_POSTGRES_URL"  # as in conftest.py, which `store_url` reads
TINY_MODEL = {"model_name": "charattr-tiny", "pretrained": None}
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
needs_postgres = pytest.mark.skipif(not os.environ.get(POSTGRES_URL_ENV),
                                    reason=f"needs a PostgreSQL server in {POSTGRES_URL_ENV}")


def test_pipeline_runs_end_to_end_and_reruns_from_the_cache(store_url, demo_source, caplog):
    caplog.set_level(logging.DEBUG)  # every log line, the store's own included
    config = {**TINY_MODEL, "database_url": store_url, "batch_size": 8}
    first, second = RunSummary(), RunSummary()
    with create_pipeline(config) as pipe:
        rows = [f.to_flat() for _r, f in pipe.iter_results(demo_source, summary=first)]
        version = pipe.fused_version()
    assert first.images == 24 and first.failed == 0 and first.stages["fused_attributes"].computed == 24
    with create_pipeline(config) as pipe:
        again = [f.to_flat() for _r, f in pipe.iter_results(demo_source, summary=second)]
    assert second.stages["fused_attributes"].skipped == 24 and second.stages["fused_attributes"].computed == 0
    assert again == rows
    with ResultStore(store_url) as store:
        assert store.count("fused_attributes", version) == 24
        assert store.count("clip_embeddings") == 24 and store.count("tag_parses") == 24
        assert repr(store).count("***") == (1 if sa.engine.make_url(store_url).password else 0)
    password = sa.engine.make_url(store_url).password
    assert "Opened the results database" in caplog.text
    assert not password or password not in caplog.text


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """The URL (with its password) of a fresh database on the test server, dropped afterwards."""
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"needs a PostgreSQL server in {POSTGRES_URL_ENV}")
    server = sa.engine.make_url(base).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"charattr_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def _password(url: str) -> str:
    password = sa.engine.make_url(url).password
    assert password, "the test server's URL must carry a password for this test to mean anything"
    return password


def _all_text(folder: Path) -> str:
    """Every file under `folder` (logs, YAML, SQLite databases...) as one lossy string."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


@needs_postgres
def test_charattr_batch_on_postgres_never_prints_the_password(postgres_database, demo_source, tmp_path):
    password = _password(postgres_database)
    def batch(database_url: str, *options: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "charattr"), "-v", "batch", str(demo_source), "--out", str(tmp_path / "r.parquet"),
                               "--database-url", database_url, "--quiet", *options],
                              capture_output=True, text=True, timeout=300)

    runs = [batch(postgres_database, "--model", "charattr-tiny", "--pretrained", "random") for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert password not in done.stdout + done.stderr
    assert re.search(r"fused_attributes: 0 computed, 24 from cache", runs[1].stderr)
    bad = batch(postgres_database.replace("/charattr_test_", "/missing_"), "--no-clip")  # no such database
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "charattr:***@" in bad.stderr and password not in bad.stderr


@needs_postgres
@pytest.mark.slow
def test_charattr_run_on_postgres_never_records_the_password(postgres_database, demo_source, tmp_path):
    """The whole asset graph with its results in PostgreSQL: console, Dagster's stored runs,
    events, job snapshots and captured logs all lack the password."""
    from dagster._serdes import serialize_value

    password = _password(postgres_database)
    home = tmp_path / "dagster_home"
    env = {k: v for k, v in os.environ.items() if k != "CHARATTR_DATABASE_URL"}
    done = subprocess.run(
        [str(BIN / "charattr"), "-v", "run", str(demo_source), "--model", "charattr-tiny", "--pretrained", "random",
         "--device", "cpu", "--database-url", postgres_database, "--warehouse", str(tmp_path / "warehouse"),
         "--reports", str(tmp_path / "reports")],
        env={**env, "DAGSTER_HOME": str(home)}, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "24 images in 2 shards" in done.stderr and "charattr:***@" in done.stderr
    assert password not in done.stdout + done.stderr

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) >= 4
        for run in runs:
            stored = [serialize_value(instance.get_job_snapshot(run.job_snapshot_id)), str(run.run_config),
                      *(serialize_value(e) for e in instance.all_logs(run.run_id))]
            assert not [s for s in stored if password in s], run.job_name
        fused = instance.get_latest_materialization_event(dg.AssetKey("fused_attributes"))
        assert fused.asset_materialization.metadata["database"].value.startswith("postgresql+psycopg://charattr:***@")
    assert password not in _all_text(home)  # compute logs and the instance's own SQLite files
    with ResultStore(postgres_database) as store:
        assert store.count_fused() == 24


def _documented_dagster_yaml(doc: str) -> str:
    found = re.search(r"```yaml\n(storage:\n.*?)```", (REPO / doc).read_text(encoding="utf-8"), re.S)
    assert found, f"{doc} lost its dagster.yaml example"
    return found.group(1)


@needs_postgres
@pytest.mark.slow
@pytest.mark.parametrize("doc", ["README.md", "docs/postgres.md"])
def test_dagster_instance_on_postgres_as_documented(doc, postgres_database, demo_source, tmp_path, monkeypatch):
    documented = _documented_dagster_yaml(doc)
    url = sa.engine.make_url(postgres_database)
    for key, value in {"USERNAME": url.username, "PASSWORD": url.password, "HOST": url.host,
                       "PORT": str(url.port), "DB": url.database}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(documented, encoding="utf-8")  # exactly what the docs say

    from charattr_dagster.definitions import build_definitions

    defs = build_definitions(make_settings(demo_source, tmp_path))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        register(instance, ["shard_000"])
        result = run_job(defs, instance, "ingest_shards", ["shard_000"])
        assert result.success
        assert instance.get_materialized_partitions(dg.AssetKey("raw_images")) == {"shard_000"}
        run_id = result.run_id
    engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:  # the run and its events are in the PostgreSQL database
            assert conn.execute(sa.text("SELECT count(*) FROM runs WHERE run_id = :r"), {"r": run_id}).scalar() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": run_id}).scalar() > 10
    finally:
        engine.dispose()
    assert not list(home.rglob("*.db"))  # no SQLite run, event or schedule storage (only compute logs are files)
