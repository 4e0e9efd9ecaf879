"""Faults: the results database goes away in the middle of a Dagster run, the step fails with one
clear sentence, and Dagster's retry (`STORE_RETRY_POLICY`) finishes the run once it is back.

SQLite: another process holds the write lock (real "database is locked"). PostgreSQL: the
database stops accepting connections. The database comes back exactly when Dagster has decided
to retry the failed step (a Dagster logger watches for STEP_UP_FOR_RETRY), so the test neither
sleeps nor races.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent / "dagster"))  # the Dagster tests' helpers (dagster_testing)

import charattr_core.store as store_module
from charattr_core.store import ResultStore, redact_url
from charattr_core.synthetic import write_demo_dataset
from charattr_dagster.definitions import build_definitions
from charattr_dagster.resources import STORE_RETRY_POLICY
from dagster_testing import make_settings, register

POSTGRES_URL_ENV = "CHARATTR_TEST_POSTGRES_URL"  # as in conftest.py
SHARD, IMAGES = "shard_000", 5
STORE_ASSETS = ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes")

pytestmark = pytest.mark.slow


def on_retry_logger(callback: Callable[[dg.DagsterEvent], None]) -> dg.LoggerDefinition:
    """A Dagster logger that calls `callback` with every STEP_UP_FOR_RETRY event."""

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            event = getattr(record, "dagster_meta", {}).get("dagster_event")
            if event is not None and event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY:
                callback(event)

    @dg.logger
    def watch(_init_context):
        log = logging.Logger("charattr-test-retry-watch", level=logging.DEBUG)
        log.addHandler(Watch())
        return log

    return watch


@pytest.fixture
def source(tmp_path: Path) -> Path:
    out = tmp_path / "src"
    write_demo_dataset(out, n_images=IMAGES, n_shards=1, seed=3, size=64)
    return out


class SqliteOutage:
    """Another process's transaction holds the SQLite write lock until `end()`."""

    def __init__(self, url: str) -> None:
        self._conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        self._conn.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        self._conn.rollback()
        self._conn.close()


class PostgresOutage:
    """The database refuses every new connection (CONNECTION LIMIT 0) until `end()`."""

    def __init__(self, admin: sa.Engine, database: str) -> None:
        self._admin, self._database = admin, database
        self._set_limit(0)

    def _set_limit(self, limit: int) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self._database}" WITH CONNECTION LIMIT {limit}')
            conn.commit()

    def end(self) -> None:
        self._set_limit(-1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outage_db(request, tmp_path: Path, monkeypatch) -> Iterator[tuple[str, Callable[[], object]]]:
    """(database URL, start_outage) for an empty results database of each backend."""
    if request.param == "sqlite":
        # SQLite would wait up to 30 s x 8 tries for the lock; a fault test need not wait that long.
        monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_S", 0.2)
        monkeypatch.setattr(store_module, "_SQLITE_LOCK_ATTEMPTS", 2)
        url = f"sqlite:///{tmp_path / 'charattr.db'}"
        ResultStore(url).close()  # the schema exists; the outage comes later
        yield url, lambda: SqliteOutage(url)
        return
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"needs {POSTGRES_URL_ENV}")
    monkeypatch.setenv("CHARATTR_DATABASE_URL", "")  # restored afterwards: a URL with a password is put there
    admin_url = sa.engine.make_url(base).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    database = f"charattr_fault_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    url = admin_url.set(database=database).render_as_string(hide_password=False)
    ResultStore(url).close()
    try:
        yield url, lambda: PostgresOutage(admin, database)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database}" WITH CONNECTION LIMIT -1')
            conn.exec_driver_sql(f'DROP DATABASE "{database}" WITH (FORCE)')
        admin.dispose()


def test_every_asset_that_writes_the_store_retries_and_deterministic_failures_do_not(source, tmp_path):
    defs = build_definitions(make_settings(source, tmp_path))
    assert STORE_RETRY_POLICY.max_retries >= 2 and STORE_RETRY_POLICY.delay
    with dg.instance_for_test() as instance:  # resolving definitions reads the instance's state storage
        for asset in STORE_ASSETS:
            assert defs.resolve_assets_def(asset).op.retry_policy == STORE_RETRY_POLICY
        # Fusing a shard whose signals were never materialized cannot get better by waiting.
        register(instance, [SHARD])
        result = defs.resolve_job_def("fuse_shards").execute_in_process(
            instance=instance, partition_key=SHARD, raise_on_error=False)
        types = [e.event_type for e in result.all_events]
    assert not result.success
    assert dg.DagsterEventType.STEP_FAILURE in types and dg.DagsterEventType.STEP_UP_FOR_RETRY not in types


def test_the_database_going_away_fails_the_step_clearly_and_the_retry_succeeds(outage_db, source, tmp_path):
    url, start_outage = outage_db
    retries: list[dg.DagsterEvent] = []
    outage = start_outage()

    def database_back(event: dg.DagsterEvent) -> None:
        retries.append(event)
        outage.end()

    settings = make_settings(source, tmp_path, database_url=url)
    defs = dg.Definitions.merge(build_definitions(settings),
                                dg.Definitions(loggers={"retry_watch": on_retry_logger(database_back)}))
    with dg.instance_for_test() as instance:
        register(instance, [SHARD])
        result = defs.resolve_job_def("ingest_shards").execute_in_process(
            instance=instance, partition_key=SHARD, raise_on_error=False,
            run_config={"loggers": {"retry_watch": {}}})
        events = instance.all_logs(result.run_id)

    assert result.success
    assert [e.step_key for e in retries] == ["raw_images"]  # the first writer failed once, then recovered
    # What the UI shows for the failed attempt: Dagster's retry, caused by the store's one sentence.
    message = retries[0].step_retry_data.error.to_string()
    assert f"the results database at {redact_url(url)}" in message, message  # one sentence, no password
    assert ("database is locked" in message) if url.startswith("sqlite") else ("connection" in message.lower())
    password = sa.engine.make_url(url).password
    assert not password or password not in message
    assert sum(1 for e in events if e.dagster_event and e.dagster_event.event_type
               == dg.DagsterEventType.STEP_RESTARTED) == 1
    with ResultStore(url) as store:
        for stage in ("raw_images", "tag_parses", "clip_embeddings"):
            (version,) = store.stage_versions(stage)
            assert store.count(stage, version) == IMAGES, stage
