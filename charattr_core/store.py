"""The results/cache database: every stage's result per image, and the fused product table.

SQLite by default (one file, good for a laptop and for several local processes), PostgreSQL by
URL (a GPU box or a cluster). Both speak the same SQLAlchemy Core schema:

- `stage_results`: the cache. One row per `(image_id, stage, stage_version, tags_digest)` with a
  JSON payload and an optional binary blob (e.g. a float16 embedding). `tags_digest` is "" for
  stages that do not read the tags; for those that do (tag parses, fused rows) the same bytes
  under other tags are another row. Keys are an image_id, or an `(image_id, tags_digest)` pair.
- `fused_attributes`: the product users query. One row per `(image_id, tags_digest, stage_version,
  source_namespace)`: the same picture posted with other tags is another answer, and both rows
  are kept; each source's product is its own (one source, one namespace), even where two sources
  hold the same image (`source_namespace` is "" for rows written without one).
- `schema_version`: one row per applied schema version, so later releases can migrate.

Guarantees:
- Every `put_*` call is ONE transaction and an upsert: a crash loses at most that call's rows and
  a re-run never duplicates one. Rows of a call are sent with executemany in chunks.
- Lookups are batched (`IN (...)` in chunks of `LOOKUP_CHUNK` ids), never one round trip per id.
- Transient failures (SQLite "database is locked"/"busy", PostgreSQL disconnects, deadlocks and
  serialisation failures) are retried with exponential backoff; then a one-sentence `StoreError`.
- A database URL is never shown with its password: errors, logs and `repr()` use `redact_url()`.

Payloads are stored as JSON (not JSONB on PostgreSQL) so they round-trip exactly, key order and
floats included (Python writes the shortest repr that reads back to the same float). numpy
scalars become Python numbers and numpy arrays lists (a float32 becomes the float64 of the same
value). NaN and infinity are refused, because JSON cannot represent them and PostgreSQL would
reject them: encode a missing number as None.

Importing this module has no side effects; nothing connects until `ResultStore(...)`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from .batching import batched
from .errors import ConfigError, StoreError

__all__ = [
    "ResultStore", "StoredResult", "redact_url", "parse_database_url", "encode_payload",
    "SCHEMA_VERSION", "LOOKUP_CHUNK", "WRITE_CHUNK",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 3  # 2: tags_digest in the keys of both tables; 3: source_namespace in fused_attributes
LOOKUP_CHUNK = 500  # ids per IN (...) query: well under SQLite's bound-variable limit (999 on old builds)
WRITE_CHUNK = 500  # rows per executemany inside one put transaction
SQLITE_BUSY_TIMEOUT_S = 30.0  # how long SQLite itself waits for another writer's lock
PG_CONNECT_TIMEOUT_S = 5  # fail early when a PostgreSQL server is unreachable
_SQLITE_LOCK_ATTEMPTS = 8  # on top of busy_timeout: a backstop, rarely needed with BEGIN IMMEDIATE
_PG_ATTEMPTS = 4
_BACKOFF_BASE_S = 0.1
_BACKOFF_CAP_S = 2.0
_PG_SCHEMA_LOCK = 0x63686172  # "char": advisory lock that serialises concurrent schema creation
# SQLSTATEs worth retrying: serialisation failure, deadlock, server shutting down / starting up,
# too many connections. Class 08 (connection exceptions) is matched by prefix.
_PG_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})
_SQLITE_BEGIN_OPTION = "charattr_sqlite_begin"
_URL_HELP = "use sqlite:///path/to/charattr.db or postgresql://user:password@host:5432/dbname"

# --------------------------------------------------------------------------------------------
# Schema (SQLAlchemy Core).
#
# stage_results deliberately has no index but its primary key, which leads with image_id: every
# batch lookup (`image_id IN (...)` for one stage version) is then an index probe per id. An extra
# (stage, stage_version) index looks useful but is a trap on PostgreSQL: while a new version fills
# up, its statistics say "a few rows", the planner scans the whole version and filters by id, and
# each lookup chunk costs O(rows of the version) (measured: 20k lookups went from 0.8 s to 21 s).
# Counting or streaming one version walks the primary key instead, which is fine for what are
# whole-table passes anyway.
# --------------------------------------------------------------------------------------------
metadata = sa.MetaData()

stage_results = sa.Table(
    "stage_results", metadata,
    sa.Column("image_id", sa.Text, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("stage_version", sa.Text, nullable=False),
    sa.Column("tags_digest", sa.Text, nullable=False, server_default=""),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("image_id", "stage", "stage_version", "tags_digest", name="pk_stage_results"),
)

fused_attributes = sa.Table(
    "fused_attributes", metadata,
    sa.Column("image_id", sa.Text, nullable=False),
    sa.Column("stage_version", sa.Text, nullable=False),
    sa.Column("tags_digest", sa.Text, nullable=False, server_default=""),
    sa.Column("source_namespace", sa.Text, nullable=False, server_default=""),
    sa.Column("source_uri", sa.Text, nullable=True),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("image_id", "stage_version", "tags_digest", "source_namespace", name="pk_fused_attributes"),
    # "the product of one version", in id order: what users query and what iter_fused pages through
    sa.Index("ix_fused_attributes_version_image", "stage_version", "image_id"),
)

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("version", name="pk_schema_version"),
)

# The stages whose results depend on the tags: version 1 keyed them by image alone, so their
# cached rows cannot say which tags they were made from and are dropped (they are cheap to make
# again: a tag parse, or a fusion over cached embeddings).
_TAG_DEPENDENT_STAGES = ("tag_parses", "fused_attributes")


def _add_tags_digest(conn: Connection) -> None:
    """Version 1 -> 2: `tags_digest` joins the primary key of both tables ("" for old rows)."""
    if conn.dialect.name == "postgresql":
        for table, pk, columns in (("stage_results", "pk_stage_results", "image_id, stage, stage_version"),
                                   ("fused_attributes", "pk_fused_attributes", "image_id, stage_version")):
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN tags_digest TEXT NOT NULL DEFAULT ''")
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {pk}")
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {pk} PRIMARY KEY ({columns}, tags_digest)")
    else:  # SQLite cannot change a primary key: copy each table into its new shape
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_fused_attributes_version_image")
        for table in (stage_results, fused_attributes):
            _copy_into_current_shape(conn, table)
    conn.execute(sa.delete(stage_results).where(stage_results.c.stage.in_(_TAG_DEPENDENT_STAGES)))


def _add_source_namespace(conn: Connection) -> None:
    """Version 2 -> 3: `source_namespace` joins the key of `fused_attributes` ("" for old rows)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE fused_attributes ADD COLUMN source_namespace TEXT NOT NULL DEFAULT ''")
        conn.exec_driver_sql("ALTER TABLE fused_attributes DROP CONSTRAINT pk_fused_attributes")
        conn.exec_driver_sql("ALTER TABLE fused_attributes ADD CONSTRAINT pk_fused_attributes "
                             "PRIMARY KEY (image_id, stage_version, tags_digest, source_namespace)")
    elif "source_namespace" not in {c["name"] for c in sa.inspect(conn).get_columns("fused_attributes")}:
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_fused_attributes_version_image")
        _copy_into_current_shape(conn, fused_attributes)
    # else: a SQLite copy made by an earlier step of this migration already has the current shape


def _copy_into_current_shape(conn: Connection, table: sa.Table) -> None:
    """SQLite cannot change a primary key: rename the table, create it in the current shape and copy
    the columns the old one has (new columns take their defaults)."""
    conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {table.name}_old")
    table.create(conn)
    present = {c["name"] for c in sa.inspect(conn).get_columns(f"{table.name}_old")}
    old = [c.name for c in table.columns if c.name in present]
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(old)}) SELECT {', '.join(old)} FROM {table.name}_old")
    conn.exec_driver_sql(f"DROP TABLE {table.name}_old")


# Steps from version v-1 to v.
_MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _add_tags_digest, 3: _add_source_namespace}


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One cached stage result: the decoded JSON payload, the optional blob, when it was written."""

    image_id: str
    payload: Any
    blob: bytes | None
    created_at: datetime
    tags_digest: str = ""  # "" for stages that do not depend on the tags


# --------------------------------------------------------------------------------------------
# URLs: parsing, validation, redaction
# --------------------------------------------------------------------------------------------
_USERINFO_SECRET = re.compile(r"(://[^/:@\s]*:)[^\s/?#]*@")  # ://user:<password>@ (greedy to the host)
_QUERY_SECRET = re.compile(r"(?i)\b(password|passwd|pwd)=[^&\s]*")
_LOOSE_SECRET = re.compile(r":[^@\s]*@")  # for strings too broken to parse


def redact_url(url: str | URL) -> str:
    """`url` with any password replaced by `***` (in the user info and in query parameters).

    Works on strings that are not valid URLs too, so that error messages about a bad URL can
    quote it safely.
    """
    if isinstance(url, URL):
        text = url.render_as_string(hide_password=True)
    else:
        # Everything between the scheme and the host goes first, whatever a parser makes of it:
        # a password with an unencoded "@" (p@ss) would otherwise leave its tail in the host.
        url = _redact_userinfo(str(url))
        try:
            text = make_url(url).render_as_string(hide_password=True)
        except Exception:  # not a URL at all: hide anything that looks like user:password@
            return _QUERY_SECRET.sub(r"\1=***", _LOOSE_SECRET.sub(":***@", url))
    text = _redact_userinfo(_USERINFO_SECRET.sub(r"\1***@", text))
    return _QUERY_SECRET.sub(r"\1=***", text)


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")  # greedy: up to the LAST "@" before the path


def _redact_userinfo(text: str) -> str:
    """`scheme://user:***@host...`: the user name is kept, everything else before the host hidden."""
    match = _USERINFO.match(text)
    if not match:
        return text
    user, colon, _secret = match.group(2).partition(":")
    return f"{match.group(1)}{user}{':***' if colon else ''}@{text[match.end():]}"


def _raw_secrets(url: str) -> list[str]:
    """The password as written in `url` (up to the last "@" before the host), and each tail of it
    after an "@": a driver that split it at the first "@" quotes the tail as part of the host."""
    match = _USERINFO.match(url)
    if not match or ":" not in match.group(2):
        return []
    secret = match.group(2).partition(":")[2]
    tails = [secret.split("@", k)[-1] + "@" for k in range(1, secret.count("@") + 1)]
    return [s for s in (secret, *tails) if s and s != "@"]


def parse_database_url(url: str | URL) -> URL:
    """Parse and check a database URL without connecting; raises `ConfigError` when it is unusable.

    `postgresql://` and `postgres://` are mapped to the psycopg 3 driver (`postgresql+psycopg://`);
    an explicit driver (`postgresql+psycopg2://`) is kept. Only SQLite and PostgreSQL are supported.
    """
    if isinstance(url, URL):
        parsed = url
    else:
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(f"The database URL is empty; {_URL_HELP}.")
        try:
            parsed = make_url(url.strip())
        except Exception:
            raise ConfigError(f"The database URL {redact_url(url)!r} cannot be parsed; {_URL_HELP}.") from None
    if parsed.host and "@" in parsed.host:
        raise ConfigError(f"The database URL {redact_url(url)!r} has an unencoded '@' before the host (in the "
                          "password?); write '@' inside a password as %40.")
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"The database URL {redact_url(parsed)!r} asks for a {backend or 'nameless'!r} database, which "
            f"charattr does not support; {_URL_HELP}.")
    return parsed


def _is_sqlite_memory(url: URL) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or url.query.get("mode") == "memory"


def _secrets(url: URL) -> list[str]:
    """Passwords in `url` (user info and query), to scrub from any message that quotes the server."""
    found = [url.password] if url.password else []
    for key, value in url.query.items():
        if key.lower() in ("password", "passwd", "pwd"):
            found.extend([value] if isinstance(value, str) else list(value))
    return [str(s) for s in found if s]


# --------------------------------------------------------------------------------------------
# JSON payloads
# --------------------------------------------------------------------------------------------
class _JsonText(str):
    """A payload already encoded to JSON text; the engine's serializer passes it through.

    Encoding happens once per row in `encode_payload` (where a failure can name the image), not a
    second time inside SQLAlchemy's bind processing.
    """

    __slots__ = ()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):  # np.float32, np.int64, np.bool_, ... -> Python scalar
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"a value of type {type(obj).__name__} is not JSON-serialisable")


def encode_payload(payload: Any) -> str:
    """Encode a payload as compact JSON text; numpy scalars/arrays are converted, NaN/inf refused.

    Raises TypeError or ValueError for what cannot be stored.
    """
    return json.dumps(payload, default=_json_default, allow_nan=False, ensure_ascii=False,
                      separators=(",", ":"))


def _engine_json_serializer(value: Any) -> str:
    return value if isinstance(value, _JsonText) else encode_payload(value)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands datetimes back naive; they were written as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _unique_ids(image_ids: Iterable[str | None]) -> list[str]:
    """Distinct ids in first-seen order; None (an image with no bytes has no id) is never stored."""
    seen: dict[str, None] = {}
    for image_id in image_ids:
        if image_id is None:
            continue
        if not isinstance(image_id, str):
            raise StoreError(f"Image ids must be strings, got {type(image_id).__name__} {image_id!r}.")
        seen[image_id] = None
    return list(seen)


ResultKey = Any  # an image_id (str), or an (image_id, tags_digest) pair for tag-dependent stages


def _unique_keys(keys: Iterable[ResultKey | None]) -> dict[tuple[str, str], ResultKey]:
    """Distinct keys in first-seen order, as `(image_id, tags_digest)` -> the caller's key; an id
    alone means tags_digest "". None (an image with no bytes has no id) is never stored."""
    found: dict[tuple[str, str], ResultKey] = {}
    for key in keys:
        if key is None:
            continue
        found.setdefault(_split_key(key), key)
    return found


def _split_key(key: ResultKey) -> tuple[str, str]:
    if isinstance(key, tuple):
        if len(key) != 2 or not all(isinstance(k, str) for k in key) or not key[0]:
            raise StoreError(f"A result key must be an image id or an (image_id, tags_digest) pair, got {key!r}.")
        return key
    if not isinstance(key, str):
        raise StoreError(f"Image ids must be strings, got {type(key).__name__} {key!r}.")
    return key, ""


def _check_key(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{name} must be a non-empty string, got {value!r}.")


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------
class ResultStore:
    """The results/cache database behind a SQLAlchemy URL (see the module docstring).

    Construction connects and creates the schema if missing, so a bad URL fails here with one
    sentence: `ConfigError` for a URL or SQLite path that cannot work, `StoreError` for a server
    that cannot be reached or a schema newer than this code. Open one store per process (a forked
    child drops the parent's pooled connections by itself); within a process it is thread-safe.
    Several processes may write the same SQLite file or PostgreSQL database at once.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = parse_database_url(url)
        self._backend = parsed.get_backend_name()
        # Longest first, so that a tail of the password never leaves the rest of it in a message.
        self._secrets = sorted({*_secrets(parsed), *(_raw_secrets(url) if isinstance(url, str) else ())},
                               key=len, reverse=True)
        self._closed = False
        self._pid = os.getpid()
        if self._backend == "sqlite":
            parsed = self._prepare_sqlite_path(parsed)
        self._url = parsed
        self._engine = self._create_engine(parsed, echo)
        # SQLite writers take the write lock up front (BEGIN IMMEDIATE): a deferred transaction
        # that upgrades from read to write gets SQLITE_BUSY at once, without waiting busy_timeout.
        self._write_engine = (self._engine.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"})
                              if self._backend == "sqlite" else self._engine)
        try:
            self._connect_once()
            self._run(self._create_schema, write=True, what="prepare the schema of")
        except BaseException:
            self._engine.dispose()
            raise
        self._upsert_stage = self._upsert(stage_results, ("image_id", "stage", "stage_version", "tags_digest"),
                                          ("payload", "blob", "created_at"))
        self._upsert_fused = self._upsert(fused_attributes, ("image_id", "stage_version", "tags_digest", "source_namespace"),
                                          ("source_uri", "confidence", "strategy", "payload", "created_at"))
        log.debug("Opened the results database at %s", redact_url(self._url))

    # -- construction helpers -----------------------------------------------------------------
    @staticmethod
    def _prepare_sqlite_path(url: URL) -> URL:
        """Expand `~` and create the folder of a SQLite file; a path that cannot work is a ConfigError."""
        if _is_sqlite_memory(url) or (url.database or "").startswith("file:"):
            return url
        path = Path(url.database).expanduser()  # type: ignore[arg-type]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"Cannot create the folder {path.parent} for the SQLite database "
                f"({exc.strerror or exc}); choose a writable path.") from None
        if path.is_dir():
            raise ConfigError(f"The SQLite database path {path} is a folder; "
                              f"give a file path such as {path / 'charattr.db'}.")
        return url.set(database=str(path))

    def _create_engine(self, url: URL, echo: bool) -> Engine:
        kwargs: dict[str, Any] = {
            "echo": echo,
            "hide_parameters": not echo,  # payloads of a whole batch do not belong in a traceback
            "json_serializer": _engine_json_serializer,
        }
        if self._backend == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
            if _is_sqlite_memory(url):
                kwargs["poolclass"] = StaticPool  # one shared connection, or each would see its own empty DB
        else:
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in url.query:
                connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
            if "application_name" not in url.query:
                connect_args["application_name"] = "charattr"
            kwargs.update(pool_pre_ping=True, connect_args=connect_args)
        try:
            engine = sa.create_engine(url, **kwargs)
        except (sa_exc.NoSuchModuleError, ImportError, sa_exc.ArgumentError) as exc:
            raise ConfigError(
                f"The database URL {redact_url(url)!r} names a driver that cannot be loaded "
                f"({self._reason(exc)}); {_URL_HELP}.") from None
        if self._backend == "sqlite":
            self._install_sqlite_hooks(engine, wal=not _is_sqlite_memory(url))
        return engine

    @staticmethod
    def _install_sqlite_hooks(engine: Engine, *, wal: bool) -> None:
        busy_ms = int(SQLITE_BUSY_TIMEOUT_S * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # SQLAlchemy, not the sqlite3 module, decides when transactions begin (see _on_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                if wal:  # readers never block the writer and vice versa; persistent in the file
                    cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            mode = connection.get_execution_options().get(_SQLITE_BEGIN_OPTION, "DEFERRED")
            connection.exec_driver_sql(f"BEGIN {mode}")

    def _connect_once(self) -> None:
        """Open one connection now so that an unusable URL fails at construction, not mid-run."""
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:
            if self._backend == "sqlite":
                raise ConfigError(
                    f"Cannot open the SQLite database {self._url.database or ':memory:'} "
                    f"({self._reason(exc)}); choose a writable file path.") from None
            raise StoreError(
                f"Cannot connect to the results database at {redact_url(self._url)} "
                f"({self._reason(exc)}); check that the server is running and the URL is right.") from exc

    def _create_schema(self, conn: Connection) -> None:
        if self._backend == "postgresql":  # two processes opening a fresh database at once
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
        metadata.create_all(conn, checkfirst=True)
        found = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
        if found is not None and found > SCHEMA_VERSION:
            raise StoreError(
                f"The results database at {redact_url(self._url)} has schema version {found}, newer than "
                f"version {SCHEMA_VERSION} that this charattr understands; upgrade charattr.")
        first = 1 if found is None else found + 1
        for version in range(first, SCHEMA_VERSION + 1):
            if found is not None:  # a fresh database is created at the current version directly
                _MIGRATIONS[version](conn)
            conn.execute(sa.insert(schema_version).values(version=version, applied_at=_utcnow()))

    def _upsert(self, table: sa.Table, keys: tuple[str, ...], updates: tuple[str, ...]) -> Any:
        insert = sqlite_dialect.insert if self._backend == "sqlite" else pg_dialect.insert
        stmt = insert(table)
        return stmt.on_conflict_do_update(index_elements=[table.c[k] for k in keys],
                                          set_={c: stmt.excluded[c] for c in updates})

    # -- running work with retries ------------------------------------------------------------
    def _reason(self, exc: BaseException) -> str:
        """The first line of the underlying driver's message, password-free, without a final period."""
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).strip()
        line = next((part.strip() for part in text.splitlines() if part.strip()), type(orig).__name__)
        for secret in self._secrets:
            line = line.replace(secret, "***@" if secret.endswith("@") else "***")
        return line[:300].rstrip(". ")

    def _is_transient(self, exc: sa_exc.DBAPIError) -> bool:
        if exc.connection_invalidated:
            return True
        if self._backend == "sqlite":
            message = str(exc.orig).lower()
            return isinstance(exc, sa_exc.OperationalError) and ("locked" in message or "busy" in message)
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)  # psycopg 3 / 2
        if sqlstate:
            return sqlstate in _PG_TRANSIENT_SQLSTATES or sqlstate.startswith("08")
        return isinstance(exc, sa_exc.OperationalError)  # the connection dropped before the server said why

    def _engine_for_this_process(self, write: bool) -> Engine:
        if self._closed:
            raise StoreError("This ResultStore is closed; open a new one to read or write results.")
        if os.getpid() != self._pid:  # forked: the parent's pooled connections are not ours to use
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        return self._write_engine if write else self._engine

    def _run(self, work: Callable[[Connection], T], *, write: bool, what: str) -> T:
        """Run `work` in one transaction, retrying it whole on transient failures.

        `what` completes the sentence "Could not ... the results database at URL".
        """
        attempts = _SQLITE_LOCK_ATTEMPTS if self._backend == "sqlite" else _PG_ATTEMPTS
        attempt = 0
        while True:
            attempt += 1
            engine = self._engine_for_this_process(write)
            try:
                with engine.begin() as conn:
                    return work(conn)
            except sa_exc.DBAPIError as exc:
                transient = self._is_transient(exc)
                if not transient or attempt >= attempts:
                    tries = f" after {attempt} attempts" if attempt > 1 else ""
                    raise StoreError(f"Could not {what} the results database at {redact_url(self._url)}"
                                     f"{tries} ({self._reason(exc)}).") from exc
                delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                log.warning("Transient error from the results database at %s (%s); retry %d of %d in %.2f s.",
                            redact_url(self._url), self._reason(exc), attempt, attempts - 1, delay)
                time.sleep(delay)
            except sa_exc.SQLAlchemyError as exc:
                raise StoreError(f"Could not {what} the results database at {redact_url(self._url)} "
                                 f"({self._reason(exc)}).") from exc

    # -- public API ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL with its password redacted."""
        return redact_url(self._url)

    @property
    def backend(self) -> str:
        """`"sqlite"` or `"postgresql"`."""
        return self._backend

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for ad-hoc queries (e.g. pandas.read_sql on fused_attributes)."""
        return self._engine

    def get_many(self, stage: str, stage_version: str, keys: Iterable[ResultKey]) -> dict[ResultKey, StoredResult]:
        """The stored results of `stage`/`stage_version` for those of `keys` that have one, by key.

        A key is an image_id, or an `(image_id, tags_digest)` pair for a stage whose results
        depend on the tags. One read transaction, `LOOKUP_CHUNK` ids per query. Missing keys are
        simply absent.
        """
        _check_key("stage", stage)
        _check_key("stage_version", stage_version)
        wanted = _unique_keys(keys)
        ids = list(dict.fromkeys(image_id for image_id, _d in wanted))
        t = stage_results
        query = sa.select(t.c.image_id, t.c.tags_digest, _RAW_PAYLOAD, t.c.blob, t.c.created_at).where(
            t.c.stage == stage, t.c.stage_version == stage_version)

        def work(conn: Connection) -> dict[ResultKey, StoredResult]:
            found: dict[ResultKey, StoredResult] = {}
            for chunk in batched(ids, LOOKUP_CHUNK):
                for row in conn.execute(query.where(t.c.image_id.in_(chunk))):
                    key = wanted.get((row.image_id, row.tags_digest))
                    payload = _payload_or_none(row.payload, row.image_id, stage) if key is not None else None
                    if payload is not None:  # a malformed row is a miss: recomputed and replaced
                        found[key] = StoredResult(row.image_id, payload, _as_bytes(row.blob),
                                                  _as_utc(row.created_at), row.tags_digest)
            return found

        return self._run(work, write=False, what=f"read {stage} results from")

    def existing_ids(self, stage: str, stage_version: str, image_ids: Iterable[str]) -> set[str]:
        """Those of `image_ids` that have a stored `stage`/`stage_version` result, under any tags
        (ids only: cheap)."""
        _check_key("stage", stage)
        _check_key("stage_version", stage_version)
        ids = _unique_ids(image_ids)
        t = stage_results
        query = sa.select(t.c.image_id).where(t.c.stage == stage, t.c.stage_version == stage_version)

        def work(conn: Connection) -> set[str]:
            found: set[str] = set()
            for chunk in batched(ids, LOOKUP_CHUNK):
                found.update(conn.execute(query.where(t.c.image_id.in_(chunk))).scalars())
            return found

        return self._run(work, write=False, what=f"look up {stage} results in")

    def fused_ids(self, stage_version: str, image_ids: Iterable[str], *, source_namespace: str = "") -> set[str]:
        """Those of `image_ids` that have a row of `stage_version` in the `fused_attributes` table,
        in the product of `source_namespace`."""
        _check_key("stage_version", stage_version)
        ids = _unique_ids(image_ids)
        t = fused_attributes
        query = sa.select(t.c.image_id).where(t.c.stage_version == stage_version,
                                              t.c.source_namespace == source_namespace)

        def work(conn: Connection) -> set[str]:
            found: set[str] = set()
            for chunk in batched(ids, LOOKUP_CHUNK):
                found.update(conn.execute(query.where(t.c.image_id.in_(chunk))).scalars())
            return found

        return self._run(work, write=False, what="look up fused rows in")

    def fused_keys(self, stage_version: str, keys: Iterable[tuple[str, str]], *,
                   source_namespace: str = "") -> set[tuple[str, str]]:
        """Those of the `(image_id, tags_digest)` keys that have a row of `stage_version` in
        `fused_attributes`, in the product of `source_namespace`."""
        _check_key("stage_version", stage_version)
        wanted = _unique_keys(keys)
        ids = list(dict.fromkeys(image_id for image_id, _d in wanted))
        t = fused_attributes
        query = sa.select(t.c.image_id, t.c.tags_digest).where(t.c.stage_version == stage_version,
                                                               t.c.source_namespace == source_namespace)

        def work(conn: Connection) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            for chunk in batched(ids, LOOKUP_CHUNK):
                found.update((r.image_id, r.tags_digest) for r in conn.execute(query.where(t.c.image_id.in_(chunk)))
                             if (r.image_id, r.tags_digest) in wanted)
            return found

        return self._run(work, write=False, what="look up fused rows in")

    def put_many(self, stage: str, stage_version: str,
                 rows: Iterable[tuple[ResultKey, Any, bytes | None]]) -> int:
        """Upsert `(key, payload, blob_or_None)` rows in ONE transaction; returns the rows written.

        A key is an image_id or an `(image_id, tags_digest)` pair (see `get_many`). Rows are
        encoded and checked before the transaction starts; one that cannot be stored raises
        `StoreError` naming the image and nothing of the call is written. A key given twice is
        written once (the last one wins). Writing the same rows again replaces them.
        """
        _check_key("stage", stage)
        _check_key("stage_version", stage_version)
        now = _utcnow()
        by_id: dict[tuple[str, str], dict[str, Any]] = {}
        for position, row in enumerate(rows):
            try:
                key, payload, blob = row
            except (TypeError, ValueError):
                raise StoreError(
                    f"Row {position} for stage {stage!r} is not an (image_id, payload, blob) triple.") from None
            _check_key(f"The image_id of row {position} for stage {stage!r}", key[0] if isinstance(key, tuple) else key)
            image_id, digest = _split_key(key)
            by_id[(image_id, digest)] = {
                "stage": stage, "stage_version": stage_version, "image_id": image_id, "tags_digest": digest,
                "payload": _encode_for(image_id, stage, payload),
                               "blob": _blob_for(image_id, stage, blob), "created_at": now}
        # Sorted keys: concurrent PostgreSQL writers then lock rows in one order and cannot deadlock.
        params = [by_id[k] for k in sorted(by_id)]
        if params:
            self._run(lambda conn: self._execute_chunks(conn, self._upsert_stage, params),
                      write=True, what=f"write {len(params)} {stage} results to")
        return len(params)

    def put_fused(self, stage_version: str, rows: Iterable[Mapping[str, Any]], *, source_namespace: str = "") -> int:
        """Upsert fused rows (`image_id`, `tags_digest`, `source_uri`, `confidence`, `strategy`, `payload`)
        in ONE transaction into the product of `source_namespace` (`charattr_core.namespaces`); a row
        is identified by image, tags digest ("" when not given), version and source namespace.

        Same guarantees as `put_many`. `payload` is typically `FusedAttributes.to_record()`.
        """
        _check_key("stage_version", stage_version)
        now = _utcnow()
        by_id: dict[tuple[str, str], dict[str, Any]] = {}
        for position, row in enumerate(rows):
            image_id = row.get("image_id") if isinstance(row, Mapping) else None
            _check_key(f"The image_id of fused row {position}", image_id)
            missing = [k for k in ("confidence", "strategy", "payload") if k not in row]
            if missing:
                raise StoreError(f"Fused row for image {image_id} has no {', '.join(missing)}.")
            _check_key(f"The strategy of fused row for image {image_id}", row["strategy"])
            digest = row.get("tags_digest") or ""
            if not isinstance(digest, str):
                raise StoreError(f"The tags_digest of fused row for image {image_id} must be a string, got {digest!r}.")
            by_id[(image_id, digest)] = {"image_id": image_id, "stage_version": stage_version, "tags_digest": digest,
                               "source_namespace": source_namespace, "source_uri": row.get("source_uri"),
                               "confidence": _confidence_for(image_id, row["confidence"]),
                               "strategy": row["strategy"], "payload": _encode_for(image_id, "fused", row["payload"]),
                               "created_at": now}
        params = [by_id[k] for k in sorted(by_id)]
        if params:
            self._run(lambda conn: self._execute_chunks(conn, self._upsert_fused, params),
                      write=True, what=f"write {len(params)} fused rows to")
        return len(params)

    @staticmethod
    def _execute_chunks(conn: Connection, statement: Any, params: list[dict[str, Any]]) -> None:
        for chunk in batched(params, WRITE_CHUNK):
            conn.execute(statement, chunk)  # a list of parameter sets: executemany

    def iter_results(self, stage: str, stage_version: str, batch_size: int = 1000) -> Iterator[StoredResult]:
        """Stream every stored result of `stage`/`stage_version` in image_id order.

        Reads `batch_size` rows per query (keyset pagination), so no transaction or cursor stays
        open while the caller works and memory stays bounded.
        """
        _check_key("stage", stage)
        _check_key("stage_version", stage_version)
        _check_batch_size(batch_size)
        t = stage_results
        base = (sa.select(t.c.image_id, t.c.tags_digest, _RAW_PAYLOAD, t.c.blob, t.c.created_at)
                .where(t.c.stage == stage, t.c.stage_version == stage_version)
                .order_by(t.c.image_id, t.c.tags_digest).limit(batch_size))
        last: tuple[str, str] | None = None
        while True:
            query = base if last is None else base.where(sa.tuple_(t.c.image_id, t.c.tags_digest) > sa.tuple_(*last))
            page = self._run(lambda conn: conn.execute(query).all(), write=False, what=f"read {stage} results from")
            for row in page:
                payload = _payload_or_none(row.payload, row.image_id, stage)
                if payload is not None:
                    yield StoredResult(row.image_id, payload, _as_bytes(row.blob), _as_utc(row.created_at),
                                       row.tags_digest)
            if len(page) < batch_size:
                return
            last = (page[-1].image_id, page[-1].tags_digest)

    def iter_fused(self, stage_version: str | None = None, batch_size: int = 1000, *,
                   source_namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Stream fused rows (all versions, or one; all sources, or one namespace) as dicts with
        the columns of `fused_attributes`.

        Ordered by (stage_version, image_id, tags_digest, source_namespace); reads `batch_size`
        rows per query (keyset pagination).
        """
        if stage_version is not None:
            _check_key("stage_version", stage_version)
        _check_batch_size(batch_size)
        t = fused_attributes
        order = (t.c.stage_version, t.c.image_id, t.c.tags_digest, t.c.source_namespace)
        base = sa.select(t).order_by(*order).limit(batch_size)
        if stage_version is not None:
            base = base.where(t.c.stage_version == stage_version)
        if source_namespace is not None:
            base = base.where(t.c.source_namespace == source_namespace)
        last: tuple[str, str, str, str] | None = None
        while True:
            query = base if last is None else base.where(sa.tuple_(*order) > sa.tuple_(*last))
            page = self._run(lambda conn: conn.execute(query).all(), write=False, what="read fused rows from")
            for row in page:
                record = row._asdict()
                record["created_at"] = _as_utc(record["created_at"])
                yield record
            if len(page) < batch_size:
                return
            last = (page[-1].stage_version, page[-1].image_id, page[-1].tags_digest, page[-1].source_namespace)

    def count(self, stage: str | None = None, stage_version: str | None = None) -> int:
        """Number of cached stage results, optionally for one stage and/or one stage version."""
        t = stage_results
        query = sa.select(sa.func.count()).select_from(t)
        if stage is not None:
            query = query.where(t.c.stage == stage)
        if stage_version is not None:
            query = query.where(t.c.stage_version == stage_version)
        return int(self._run(lambda conn: conn.execute(query).scalar_one(), write=False, what="count results in"))

    def count_fused(self, stage_version: str | None = None, *, source_namespace: str | None = None) -> int:
        """Number of fused rows, optionally for one stage version and/or one source namespace."""
        t = fused_attributes
        query = sa.select(sa.func.count()).select_from(t)
        if stage_version is not None:
            query = query.where(t.c.stage_version == stage_version)
        if source_namespace is not None:
            query = query.where(t.c.source_namespace == source_namespace)
        return int(self._run(lambda conn: conn.execute(query).scalar_one(), write=False, what="count fused rows in"))

    def stage_versions(self, stage: str) -> list[str]:
        """The distinct versions of `stage` that have cached results, sorted."""
        _check_key("stage", stage)
        t = stage_results
        query = sa.select(t.c.stage_version).where(t.c.stage == stage).distinct().order_by(t.c.stage_version)
        return list(self._run(lambda conn: conn.execute(query).scalars().all(), write=False,
                              what=f"list {stage} versions in"))

    def close(self) -> None:
        """Release all connections. Idempotent; the store cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"ResultStore({redact_url(self._url)!r}{state})"


# --------------------------------------------------------------------------------------------
# Row checks (run before a transaction starts, so a bad row costs nothing)
# --------------------------------------------------------------------------------------------
def _encode_for(image_id: str, stage: str, payload: Any) -> _JsonText:
    try:
        return _JsonText(encode_payload(payload))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"The {stage} payload of image {image_id} cannot be stored as JSON ({exc}).") from None


def _blob_for(image_id: str, stage: str, blob: Any) -> bytes | None:
    if blob is None or isinstance(blob, bytes):
        return blob
    if isinstance(blob, (bytearray, memoryview)):
        return bytes(blob)
    raise StoreError(f"The {stage} blob of image {image_id} must be bytes or None, not {type(blob).__name__}.")


def _confidence_for(image_id: str, value: Any) -> float:
    try:
        confidence = float(value)
    except (TypeError, ValueError):
        raise StoreError(f"The confidence of fused row for image {image_id} is not a number ({value!r}).") from None
    if not np.isfinite(confidence):
        raise StoreError(f"The confidence of fused row for image {image_id} is {confidence}, not a finite number.")
    return confidence


# The payload column read as stored (text on SQLite), so that one malformed row is decoded, and
# skipped, on its own instead of failing the whole query inside SQLAlchemy's JSON processing.
_RAW_PAYLOAD = sa.type_coerce(stage_results.c.payload, sa.Text).label("payload")


def _payload_or_none(raw: Any, image_id: str, stage: str) -> dict[str, Any] | None:
    """The decoded payload of one cached row; None (logged) when it is not a JSON object."""
    try:
        payload = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        log.warning("ignoring a malformed cached %s result for image %s; it will be recomputed", stage, image_id)
        return None
    return payload


def _as_bytes(blob: Any) -> bytes | None:
    return None if blob is None else bytes(blob)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise StoreError(f"batch_size must be a positive integer, got {batch_size!r}.")
