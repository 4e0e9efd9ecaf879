"""Tests of the results/cache database (charattr_core/store.py).

Tests taking `store_url` run against SQLite in tmp_path and, when CHARATTR_TEST_POSTGRES_URL is
set, against a fresh schema on that PostgreSQL server (see tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import sqlalchemy as sa

from charattr_core import store as store_module
from charattr_core.errors import ConfigError, StoreError
from charattr_core.store import (LOOKUP_CHUNK, WRITE_CHUNK, ResultStore, parse_database_url, redact_url,
                                 schema_version)

STAGE, VERSION = "tags", "tags-1+vocab-000000000000"
PASSWORD = "s3cret"


def _rows(ids, **extra):
    return [(i, {"image_id": i, "n": k, **extra}, i.encode()) for k, i in enumerate(ids)]


def _ids(n: int, prefix: str = "img") -> list[str]:
    return [f"{prefix}-{k:05d}" for k in range(n)]


def _exception_texts(exc: BaseException) -> str:
    """str() and repr() of an exception and everything it was raised from."""
    texts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


def _assert_one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and len(message) < 400, message


# ---- round trips --------------------------------------------------------------------------------

def test_round_trip_keeps_payload_blob_floats_and_key_order(store_url):
    floats = [0.1, 1 / 3, 1e-300, 5e-324, 1.7976931348623157e308, 123456789.12345679, -2.5]
    payload = {"z_first": 1, "a_second": {"floats": floats, "text": "髪 ✨ \"quoted\"", "none": None,
                                          "flag": True, "big": 2**63 - 1, "nested": [[1, 2], []]}}
    blob = bytes(range(256)) * 4
    with ResultStore(store_url) as store:
        written = store.put_many(STAGE, VERSION, [("a", payload, blob), ("b", {"only": "payload"}, None)])
        got = store.get_many(STAGE, VERSION, ["a", "b", "missing"])

    assert written == 2 and set(got) == {"a", "b"}
    assert got["a"].payload == payload
    assert got["a"].payload["a_second"]["floats"] == floats  # exact float equality, not approx
    assert list(got["a"].payload) == ["z_first", "a_second"]  # JSON, not JSONB: key order kept
    assert got["a"].blob == blob and got["b"].blob is None
    assert got["a"].image_id == "a"
    assert got["a"].created_at.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - got["a"].created_at).total_seconds()) < 3600


def test_negative_zero_survives(store_url):
    with ResultStore(store_url) as store:
        store.put_many(STAGE, VERSION, [("a", {"x": -0.0}, None)])
        x = store.get_many(STAGE, VERSION, ["a"])["a"].payload["x"]
    assert x == 0.0 and math.copysign(1.0, x) == -1.0


def test_numpy_scalars_and_arrays_are_converted(store_url):
    payload = {"f32": np.float32(0.1), "f64": np.float64(1 / 3), "i64": np.int64(7), "flag": np.bool_(True),
               "vec": np.arange(3, dtype=np.int16), "scores": {"blonde": np.float16(0.5)}}
    with ResultStore(store_url) as store:
        store.put_many(STAGE, VERSION, [("a", payload, None)])
        got = store.get_many(STAGE, VERSION, ["a"])["a"].payload
    assert got == {"f32": float(np.float32(0.1)), "f64": 1 / 3, "i64": 7, "flag": True, "vec": [0, 1, 2],
                   "scores": {"blonde": 0.5}}
    assert type(got["i64"]) is int and type(got["flag"]) is bool


def test_data_persists_across_reopen(store_url):
    with ResultStore(store_url) as store:
        store.put_many(STAGE, VERSION, _rows(_ids(10)))
    with ResultStore(store_url) as store:
        assert store.count(STAGE, VERSION) == 10
        assert store.get_many(STAGE, VERSION, ["img-00003"])["img-00003"].payload["n"] == 3


# ---- upserts ------------------------------------------------------------------------------------

def test_upsert_is_idempotent_and_updates(store_url):
    ids = _ids(250)
    with ResultStore(store_url) as store:
        assert store.put_many(STAGE, VERSION, _rows(ids, round=1)) == 250
        assert store.put_many(STAGE, VERSION, _rows(ids, round=1)) == 250
        assert store.count() == 250
        store.put_many(STAGE, VERSION, _rows(ids[:100], round=2))
        got = store.get_many(STAGE, VERSION, ids)
        assert store.count() == 250
    assert {got[i].payload["round"] for i in ids[:100]} == {2}
    assert {got[i].payload["round"] for i in ids[100:]} == {1}


def test_duplicate_ids_in_one_call_are_written_once_last_wins(store_url):
    with ResultStore(store_url) as store:
        n = store.put_many(STAGE, VERSION, [("a", {"v": 1}, None), ("b", {"v": 1}, None), ("a", {"v": 2}, b"x")])
        got = store.get_many(STAGE, VERSION, ["a", "b"])
        assert n == 2 and store.count() == 2
    assert got["a"].payload == {"v": 2} and got["a"].blob == b"x"


def test_empty_calls_do_nothing(store_url):
    with ResultStore(store_url) as store:
        assert store.put_many(STAGE, VERSION, []) == 0
        assert store.put_fused(VERSION, iter(())) == 0
        assert store.get_many(STAGE, VERSION, []) == {}
        assert store.existing_ids(STAGE, VERSION, []) == set()
        assert store.count() == 0 and store.count_fused() == 0


# ---- batched lookups ----------------------------------------------------------------------------

def test_get_many_chunks_large_id_lists_and_returns_exactly_the_stored_subset(store_url):
    universe = _ids(3000)
    stored = universe[::2]  # 1,500 stored, interleaved with 1,500 that are not
    requested = universe[:2400] + _ids(200, prefix="never") + universe[:50]  # with repeats
    assert len(set(requested)) > 4 * LOOKUP_CHUNK  # several IN (...) chunks
    with ResultStore(store_url) as store:
        store.put_many(STAGE, VERSION, _rows(stored))
        store.put_many(STAGE, "another-version", _rows(universe))  # must not leak into the answer
        store.put_many("clip", VERSION, _rows(universe))
        got = store.get_many(STAGE, VERSION, iter(requested))  # any iterable, consumed once
    expected = set(stored) & set(requested)
    assert set(got) == expected and len(expected) == 1200
    assert all(got[i].payload["image_id"] == i and got[i].blob == i.encode() for i in expected)


def test_existing_ids_is_per_stage_and_version(store_url):
    with ResultStore(store_url) as store:
        store.put_many(STAGE, VERSION, _rows(_ids(1200)[::3]))
        store.put_many(STAGE, "v-other", _rows(["img-00001"]))
        store.put_many("clip", VERSION, _rows(["img-00002"]))
        found = store.existing_ids(STAGE, VERSION, _ids(1200) + [None, "unknown"])
        assert store.existing_ids("clip", VERSION, ["img-00000", "img-00002"]) == {"img-00002"}
    assert found == set(_ids(1200)[::3])


def test_count_and_stage_versions(store_url):
    with ResultStore(store_url) as store:
        store.put_many(STAGE, "v2", _rows(_ids(3)))
        store.put_many(STAGE, "v1", _rows(_ids(5)))
        store.put_many("clip", "c1", _rows(_ids(7)))
        assert store.count() == 15
        assert store.count(STAGE) == 8 and store.count(stage_version="v1") == 5
        assert store.count(STAGE, "v2") == 3 and store.count("clip", "v1") == 0
        assert store.stage_versions(STAGE) == ["v1", "v2"]
        assert store.stage_versions("nothing") == []


def test_iter_results_pages_through_everything_in_order(store_url):
    ids = _ids(23)
    with ResultStore(store_url) as store:
        store.put_many(STAGE, VERSION, _rows(reversed(ids)))
        store.put_many(STAGE, "other", _rows(_ids(5, prefix="zz")))
        streamed = list(store.iter_results(STAGE, VERSION, batch_size=5))
    assert [r.image_id for r in streamed] == ids
    assert all(r.blob == r.image_id.encode() for r in streamed)


# ---- fused table --------------------------------------------------------------------------------

def _fused(ids, version_tag="a", confidence=0.5):
    return [{"image_id": i, "source_uri": f"file:///{i}.png", "confidence": confidence, "strategy": "tag_priority",
             "payload": {"hair_color": ["blonde"], "tag": version_tag}} for i in ids]


def test_put_fused_upserts_and_iter_fused_streams(store_url):
    with ResultStore(store_url) as store:
        assert store.put_fused("f1", _fused(_ids(12))) == 12
        store.put_fused("f2", _fused(_ids(5), version_tag="b"))
        store.put_fused("f1", _fused(_ids(4), version_tag="c", confidence=np.float32(0.75)))  # replaces 4
        assert store.count_fused() == 17 and store.count_fused("f1") == 12
        assert store.fused_ids("f2", _ids(7) + ["elsewhere"]) == set(_ids(5))
        only_f1 = list(store.iter_fused("f1", batch_size=5))
        everything = list(store.iter_fused(batch_size=3))
    assert [r["image_id"] for r in only_f1] == _ids(12)
    assert [r["payload"]["tag"] for r in only_f1] == ["c"] * 4 + ["a"] * 8
    assert only_f1[0]["confidence"] == 0.75 and only_f1[0]["source_uri"] == "file:///img-00000.png"
    assert [(r["stage_version"], r["image_id"]) for r in everything] == \
        [("f1", i) for i in _ids(12)] + [("f2", i) for i in _ids(5)]
    assert set(everything[0]) == {"image_id", "stage_version", "tags_digest", "source_namespace", "source_uri",
                                  "confidence", "strategy", "payload", "created_at"}


def test_each_source_namespace_keeps_its_own_product_rows(store_url):
    """One source, one namespace: the same image fused for two sources is two rows, and writing
    one source's product never replaces or shows up in the other's."""
    with ResultStore(store_url) as store:
        store.put_fused("f1", _fused(_ids(3), version_tag="a"), source_namespace="a-11111111")
        store.put_fused("f1", _fused(_ids(2), version_tag="b"), source_namespace="b-22222222")
        assert store.count_fused("f1") == 5
        assert store.count_fused(source_namespace="a-11111111") == 3
        assert store.fused_ids("f1", _ids(3), source_namespace="b-22222222") == set(_ids(2))
        assert store.fused_keys("f1", [(i, "") for i in _ids(3)], source_namespace="b-22222222") == \
            {(i, "") for i in _ids(2)}
        a_rows = list(store.iter_fused("f1", batch_size=2, source_namespace="a-11111111"))
        both = list(store.iter_fused(batch_size=2))  # pages through rows that share (version, image, tags)
    assert [r["payload"]["tag"] for r in a_rows] == ["a"] * 3
    assert {r["source_namespace"] for r in a_rows} == {"a-11111111"}
    assert sorted((r["image_id"], r["source_namespace"]) for r in both) == sorted(
        [(i, "a-11111111") for i in _ids(3)] + [(i, "b-22222222") for i in _ids(2)])


def test_a_version_2_database_gets_source_namespaces_and_keeps_its_rows(store_url):
    """A results database of schema 2 (tags digests, no source namespaces) opens, keeps its product
    rows under the namespace "", and then takes rows of several sources."""
    ResultStore(store_url).close()  # creates the folder / proves the URL; then replace with a v2 schema
    old = sa.MetaData()
    fused = sa.Table(
        "fused_attributes", old, sa.Column("image_id", sa.Text, nullable=False),
        sa.Column("stage_version", sa.Text, nullable=False),
        sa.Column("tags_digest", sa.Text, nullable=False, server_default=""), sa.Column("source_uri", sa.Text),
        sa.Column("confidence", sa.Float, nullable=False), sa.Column("strategy", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False), sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "stage_version", "tags_digest", name="pk_fused_attributes"),
        sa.Index("ix_fused_attributes_version_image", "stage_version", "image_id"))
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE fused_attributes")
        conn.exec_driver_sql("DELETE FROM schema_version WHERE version > 2")
        old.create_all(conn)
        conn.execute(sa.insert(fused).values(image_id="old", stage_version="f1", tags_digest="t", source_uri="/x.png",
                                             confidence=0.5, strategy="tag_priority", payload={"a": 1}, created_at=now))
    engine.dispose()
    with ResultStore(store_url) as store:
        [row] = list(store.iter_fused())
        assert (row["image_id"], row["tags_digest"], row["source_namespace"], row["payload"]) == ("old", "t", "", {"a": 1})
        store.put_fused("f1", [{"image_id": "old", "tags_digest": "t", "confidence": 0.9, "strategy": "s",
                                "payload": {}}], source_namespace="a-11111111")
        assert store.count_fused("f1") == 2 and store.count_fused("f1", source_namespace="") == 1
        with store.engine.begin() as conn:
            assert conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() == \
                store_module.SCHEMA_VERSION


@pytest.mark.parametrize("bad_row, fragment", [
    ({"image_id": "x", "confidence": 0.5, "payload": {}}, "strategy"),
    ({"image_id": "x", "confidence": float("nan"), "strategy": "s", "payload": {}}, "confidence"),
    ({"image_id": "x", "confidence": "high", "strategy": "s", "payload": {}}, "confidence"),
    ({"image_id": "", "confidence": 0.5, "strategy": "s", "payload": {}}, "image_id"),
    ({"image_id": "x", "confidence": 0.5, "strategy": "s", "payload": {"v": object()}}, "JSON"),
])
def test_a_bad_fused_row_writes_nothing_of_its_batch(store_url, bad_row, fragment):
    with ResultStore(store_url) as store:
        store.put_fused("f1", _fused(["before"]))
        with pytest.raises(StoreError, match=fragment) as info:
            store.put_fused("f1", _fused(_ids(3)) + [bad_row] + _fused(_ids(3, prefix="after")))
        assert [r["image_id"] for r in store.iter_fused()] == ["before"]
    _assert_one_sentence(str(info.value))


# ---- crash safety -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_payload", [{"v": object()}, {"v": float("nan")}, {"v": {1, 2}}])
def test_unserialisable_payload_leaves_no_partial_batch(store_url, bad_payload):
    with ResultStore(store_url) as store:
        store.put_many(STAGE, VERSION, _rows(_ids(10, prefix="early")))
        batch = _rows(_ids(600)) + [("bad-one", bad_payload, None)] + _rows(_ids(300, prefix="late"))
        with pytest.raises(StoreError, match="bad-one") as info:
            store.put_many(STAGE, VERSION, batch)
        assert store.count() == 10
        assert store.existing_ids(STAGE, VERSION, _ids(10, prefix="early")) == set(_ids(10, prefix="early"))
    _assert_one_sentence(str(info.value))


@pytest.mark.parametrize("bad_row, fragment", [
    (("only-two", {}), "triple"),
    ((None, {}, None), "image_id"),
    (("a", {}, "not bytes"), "blob"),
])
def test_malformed_rows_are_refused_with_a_reason(store_url, bad_row, fragment):
    with ResultStore(store_url) as store:
        with pytest.raises(StoreError, match=fragment):
            store.put_many(STAGE, VERSION, _rows(_ids(3)) + [bad_row])
        assert store.count() == 0


def test_failure_mid_transaction_rolls_back_the_whole_call(store_url):
    """The database fails after some chunks of a call were already executed: none of them stay."""
    with ResultStore(store_url) as store:
        store.put_many(STAGE, VERSION, _rows(_ids(20, prefix="early")))
        executed = []

        def fail_on_third_chunk(conn, cursor, statement, parameters, context, executemany):
            if executemany and "stage_results" in statement:
                executed.append(len(parameters))
                if len(executed) == 3:
                    raise RuntimeError("simulated crash in the middle of a batch")

        sa.event.listen(store.engine, "before_cursor_execute", fail_on_third_chunk)
        try:
            with pytest.raises(RuntimeError, match="simulated crash"):
                store.put_many(STAGE, VERSION, _rows(_ids(3 * WRITE_CHUNK)))
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", fail_on_third_chunk)
        assert executed == [WRITE_CHUNK] * 3  # two chunks reached the database before the failure
        assert store.count() == 20
        assert store.existing_ids(STAGE, VERSION, _ids(3 * WRITE_CHUNK)) == set()
        store.put_many(STAGE, VERSION, _rows(_ids(3 * WRITE_CHUNK)))  # and the store still works
        assert store.count() == 20 + 3 * WRITE_CHUNK


# ---- bad URLs and secrets -----------------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("url, error", [
    ("garbage string", ConfigError),
    ("foo://", ConfigError),
    (f"mysql://user:{PASSWORD}@localhost/db", ConfigError),
    ("", ConfigError),
    ("sqlite:////proc/x/y.db", ConfigError),
    ("sqlite:////proc/y.db", ConfigError),
    (f"postgresql://charattr:{PASSWORD}@127.0.0.1:1/charattr", StoreError),
    (f"postgres://charattr:{PASSWORD}@127.0.0.1:1/charattr", StoreError),
    (f"postgresql+psycopg://charattr@127.0.0.1:1/charattr?password={PASSWORD}", StoreError),
])
def test_bad_urls_fail_at_construction_with_one_sentence_and_no_password(url, error, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(error) as info:
        ResultStore(url)
    _assert_one_sentence(str(info.value))
    assert PASSWORD not in _exception_texts(info.value)
    assert PASSWORD not in caplog.text


def test_unreachable_server_message_names_the_host_and_reason():
    with pytest.raises(StoreError, match=r"127\.0\.0\.1.*(refused|failed)"):
        ResultStore(f"postgresql://charattr:{PASSWORD}@127.0.0.1:1/charattr")


def test_sqlite_path_that_is_a_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="folder"):
        ResultStore(f"sqlite:///{tmp_path}")


@pytest.mark.parametrize("url, expected", [
    (f"postgresql://me:{PASSWORD}@db.example:5432/attrs", "postgresql://me:***@db.example:5432/attrs"),
    (f"postgresql+psycopg://me:{PASSWORD}@h/d?sslmode=require&password={PASSWORD}",
     "postgresql+psycopg://me:***@h/d?password=***&sslmode=require"),
    (f"postgresql://me:p@{PASSWORD}@h/d", "postgresql://me:***@h/d"),  # an unescaped @ in the password
    (f"not a url me:{PASSWORD}@host", "not a url me:***@host"),
    ("sqlite:///data/charattr.db", "sqlite:///data/charattr.db"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert PASSWORD not in redact_url(url)


def test_parse_database_url_maps_postgres_to_psycopg3():
    assert parse_database_url("postgresql://u:p@h/d").drivername == "postgresql+psycopg"
    assert parse_database_url("postgres://u:p@h/d").drivername == "postgresql+psycopg"
    assert parse_database_url("postgresql+psycopg2://u:p@h/d").drivername == "postgresql+psycopg2"
    assert parse_database_url("sqlite:///x.db").drivername == "sqlite"


def test_repr_and_url_hide_the_password(store_url):
    secret = sa.engine.make_url(store_url).password
    with ResultStore(store_url) as store:
        shown = [repr(store), str(store), store.url]
        assert store.url == redact_url(parse_database_url(store_url))
        assert store.backend == parse_database_url(store_url).get_backend_name()
    if secret:  # the PostgreSQL variant: a URL with a real password
        assert all(secret not in s and "***" in s for s in shown)
    assert "closed" in repr(store)


# ---- SQLite specifics ---------------------------------------------------------------------------

def test_sqlite_creates_the_parent_folder_of_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ResultStore("sqlite:///data/nested/charattr.db") as store:
        store.put_many(STAGE, VERSION, _rows(["a"]))
    assert (tmp_path / "data" / "nested" / "charattr.db").is_file()


def test_sqlite_in_memory_works_across_calls():
    with ResultStore("sqlite://") as store:
        store.put_many(STAGE, VERSION, _rows(["a", "b"]))
        assert store.count() == 2


def test_sqlite_pragmas_are_set_on_every_connection(tmp_path):
    with ResultStore(f"sqlite:///{tmp_path / 'p.db'}") as store:
        with store.engine.connect() as first, store.engine.connect() as second:  # two pooled connections
            for conn in (first, second):
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


_LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
conn.close()
"""


@contextlib.contextmanager
def _another_process_holds_the_write_lock(path: Path, seconds: float) -> Iterator[subprocess.Popen]:
    """A separate Python process (not a thread of this one) holds SQLite's write lock for `seconds`."""
    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.wait(timeout=30)
        holder.stdout.close()


def test_sqlite_write_retries_while_another_process_holds_the_lock(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_S", 0.05)  # make SQLite give up fast...
    path = tmp_path / "locked.db"
    with ResultStore(f"sqlite:///{path}") as store:
        with _another_process_holds_the_write_lock(path, 0.6) as holder:
            assert holder.pid != os.getpid()
            with caplog.at_level(logging.WARNING, logger="charattr_core.store"):
                assert store.put_many(STAGE, VERSION, _rows(_ids(50))) == 50  # ...so our backoff must carry it
        assert store.count() == 50
    assert "retry" in caplog.text and "locked" in caplog.text


def test_sqlite_lock_that_never_clears_becomes_a_store_error(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(store_module, "_SQLITE_LOCK_ATTEMPTS", 3)
    path = tmp_path / "locked.db"
    with ResultStore(f"sqlite:///{path}") as store:
        with _another_process_holds_the_write_lock(path, 3.0):
            with pytest.raises(StoreError, match="after 3 attempts.*locked") as info:
                store.put_many(STAGE, VERSION, _rows(_ids(5)))
        _assert_one_sentence(str(info.value))


# ---- PostgreSQL specifics -----------------------------------------------------------------------

def test_postgres_reconnects_after_the_server_drops_its_connections(store_url):
    if not store_url.startswith("postgresql"):
        pytest.skip("PostgreSQL-only: needs a server that can terminate the store's connections")
    app = f"charattr_test_{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(store_url).update_query_dict({"application_name": app})
    with ResultStore(url.render_as_string(hide_password=False)) as store:
        store.put_many(STAGE, VERSION, _rows(_ids(5)))  # leaves an idle pooled connection
        admin = sa.create_engine(url.update_query_dict({"application_name": "charattr_test_admin"}))
        try:
            with admin.begin() as conn:
                killed = conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :app"),
                    {"app": app}).scalar()
        finally:
            admin.dispose()
        assert killed >= 1
        assert store.put_many(STAGE, VERSION, _rows(_ids(10))) == 10
        assert store.count() == 10


# ---- schema bookkeeping and lifecycle -----------------------------------------------------------

def test_schema_version_is_recorded_and_a_newer_schema_is_refused(store_url):
    with ResultStore(store_url) as store:
        with store.engine.begin() as conn:
            assert conn.execute(sa.select(schema_version.c.version)).scalars().all() == list(range(1, store_module.SCHEMA_VERSION + 1))
            conn.execute(sa.insert(schema_version).values(version=99, applied_at=datetime.now(timezone.utc)))
    with pytest.raises(StoreError, match="schema version 99.*upgrade charattr") as info:
        ResultStore(store_url)
    _assert_one_sentence(str(info.value))


def test_closed_store_refuses_work(store_url):
    store = ResultStore(store_url)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get_many(STAGE, VERSION, ["a"])
    with pytest.raises(StoreError, match="closed"):
        store.put_many(STAGE, VERSION, _rows(["a"]))


def test_invalid_stage_keys_are_refused(store_url):
    with ResultStore(store_url) as store:
        with pytest.raises(StoreError, match="stage_version"):
            store.put_many(STAGE, "", _rows(["a"]))
        with pytest.raises(StoreError, match="stage"):
            store.get_many(None, VERSION, ["a"])  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="strings"):
            store.existing_ids(STAGE, VERSION, [1, 2])  # type: ignore[list-item]


# ---- concurrency --------------------------------------------------------------------------------

WRITERS, ROWS_PER_WRITER, WRITE_BATCH = 4, 2000, 100


def _concurrent_writer(url: str, worker: int, barrier, errors) -> None:
    """Runs in a spawned process: open the store, wait for the others, then write in batches."""
    try:
        with ResultStore(url) as store:
            barrier.wait(timeout=120)
            ids = [f"w{worker}-{k:05d}" for k in range(ROWS_PER_WRITER)]
            for start in range(0, ROWS_PER_WRITER, WRITE_BATCH):
                chunk = ids[start:start + WRITE_BATCH]
                store.put_many(STAGE, VERSION, [(i, {"worker": worker, "id": i}, None) for i in chunk])
    except BaseException as exc:  # report to the parent, which asserts on it
        errors.put(f"writer {worker}: {type(exc).__name__}: {exc}")
        raise


@pytest.mark.timeout(240)
def test_concurrent_writer_processes_do_not_fail_or_lose_rows(store_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(WRITERS), ctx.Queue()
    writers = [ctx.Process(target=_concurrent_writer, args=(store_url, w, barrier, errors)) for w in range(WRITERS)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(timeout=200)
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert reported == []
    assert [p.exitcode for p in writers] == [0] * WRITERS
    with ResultStore(store_url) as store:
        assert store.count(STAGE, VERSION) == WRITERS * ROWS_PER_WRITER
        got = store.get_many(STAGE, VERSION, [f"w{w}-01999" for w in range(WRITERS)])
    assert [got[f"w{w}-01999"].payload["worker"] for w in range(WRITERS)] == list(range(WRITERS))


# ---- bulk sanity (timings are printed, never asserted) ------------------------------------------

def test_bulk_write_and_read_sanity(store_url, record_property):
    n, batch = 20_000, 1_000
    ids = _ids(n)
    embedding = np.linspace(-1, 1, 512, dtype=np.float16).tobytes()
    with ResultStore(store_url) as store:
        start = time.perf_counter()
        for k in range(0, n, batch):
            store.put_many("clip", VERSION, [(i, {"model_key": "ViT-B-32/openai", "dim": 512}, embedding)
                                             for i in ids[k:k + batch]])
        wrote = time.perf_counter() - start
        start = time.perf_counter()
        got = store.get_many("clip", VERSION, ids)
        read = time.perf_counter() - start
        start = time.perf_counter()
        existing = store.existing_ids("clip", VERSION, ids)
        checked = time.perf_counter() - start
        assert store.count("clip", VERSION) == n
    assert len(got) == n and existing == set(ids)
    assert np.array_equal(np.frombuffer(got[ids[-1]].blob, dtype=np.float16),
                          np.linspace(-1, 1, 512, dtype=np.float16))
    rates = {"write_rows_per_s": n / wrote, "get_many_rows_per_s": n / read, "existing_ids_per_s": n / checked}
    for key, value in rates.items():
        record_property(key, round(value))
    print(f"[{store_url.split(':')[0]}] " + ", ".join(f"{k}={v:,.0f}" for k, v in rates.items()))
