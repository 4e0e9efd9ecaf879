"""The results store keys tag-dependent results by image AND tags digest (schema version 2), and a
version-1 database is migrated so that it never answers with a result made from other tags."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from charattr_core.store import ResultStore

V = "v1"


def test_the_same_image_under_two_tag_digests_keeps_two_results(store_url):
    with ResultStore(store_url) as store:
        store.put_many("tag_parses", V, [(("img", "blonde"), {"hair": "blonde"}, None),
                                         (("img", "red"), {"hair": "red"}, None)])
        store.put_many("clip_embeddings", V, [("img", {"dim": 4}, b"\0" * 8)])
        got = store.get_many("tag_parses", V, [("img", "red"), ("img", "blonde"), ("img", "other"), "img"])
        assert {k: r.payload["hair"] for k, r in got.items()} == {("img", "red"): "red", ("img", "blonde"): "blonde"}
        assert set(store.get_many("clip_embeddings", V, ["img", ("img", "blonde")])) == {"img"}
        assert store.count("tag_parses") == 2
        streamed = [(r.image_id, r.tags_digest) for r in store.iter_results("tag_parses", V, batch_size=1)]
        assert streamed == [("img", "blonde"), ("img", "red")]

        rows = [{"image_id": "img", "tags_digest": d, "source_uri": f"/x/{d}.png", "confidence": 0.5,
                 "strategy": "tag_priority", "payload": {"hair": d}} for d in ("blonde", "red")]
        assert store.put_fused("f", rows) == 2
        assert store.put_fused("f", rows[:1]) == 1  # an upsert: still two rows
        assert store.count_fused("f") == 2
        assert store.fused_keys("f", [("img", "red"), ("img", "green")]) == {("img", "red")}
        assert [r["tags_digest"] for r in store.iter_fused("f", batch_size=1)] == ["blonde", "red"]


_OLD = sa.MetaData()
_OLD_STAGE = sa.Table(
    "stage_results", _OLD,
    sa.Column("image_id", sa.Text, nullable=False), sa.Column("stage", sa.Text, nullable=False),
    sa.Column("stage_version", sa.Text, nullable=False), sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("blob", sa.LargeBinary), sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("image_id", "stage", "stage_version", name="pk_stage_results"))
_OLD_FUSED = sa.Table(
    "fused_attributes", _OLD,
    sa.Column("image_id", sa.Text, nullable=False), sa.Column("stage_version", sa.Text, nullable=False),
    sa.Column("source_uri", sa.Text), sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("strategy", sa.Text, nullable=False), sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("image_id", "stage_version", name="pk_fused_attributes"),
    sa.Index("ix_fused_attributes_version_image", "stage_version", "image_id"))
_OLD_VERSION = sa.Table(
    "schema_version", _OLD, sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("version", name="pk_schema_version"))


def test_a_version_1_database_is_migrated_without_wrong_answers(store_url):
    ResultStore(store_url).close()  # creates the folder / proves the URL; then replace with a v1 schema
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        for table in ("stage_results", "fused_attributes", "schema_version"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
        _OLD.create_all(conn)
        conn.execute(sa.insert(_OLD_VERSION).values(version=1, applied_at=now))
        conn.execute(sa.insert(_OLD_STAGE), [
            {"image_id": "img", "stage": "clip_embeddings", "stage_version": V, "payload": {"dim": 4},
             "blob": b"\1" * 8, "created_at": now},
            # made from some tags that version 1 did not key: must never answer again
            {"image_id": "img", "stage": "tag_parses", "stage_version": V, "payload": {"hair": "blonde"},
             "blob": None, "created_at": now}])
        conn.execute(sa.insert(_OLD_FUSED).values(image_id="img", stage_version="fused-1+x", source_uri="/x/a.png",
                                                  confidence=0.5, strategy="tag_priority", payload={"a": 1},
                                                  created_at=now))
    engine.dispose()

    with ResultStore(store_url) as store:
        with store.engine.begin() as conn:
            assert conn.execute(sa.text("SELECT version FROM schema_version ORDER BY version")).scalars().all() == [1, 2, 3]
        assert store.get_many("clip_embeddings", V, ["img"])["img"].blob == b"\1" * 8  # kept
        assert store.count("tag_parses") == 0  # dropped: it could not say which tags made it
        assert store.get_many("tag_parses", V, [("img", "-")]) == {}
        old = list(store.iter_fused("fused-1+x"))
        assert len(old) == 1 and old[0]["tags_digest"] == "" and old[0]["payload"] == {"a": 1}
        assert old[0]["source_namespace"] == ""  # version 3: rows written before source namespaces
        store.put_many("tag_parses", V, [(("img", "a"), {"hair": "red"}, None), (("img", "b"), {"hair": "x"}, None)])
        assert store.count("tag_parses") == 2
        store.put_fused("fused-2+y", [{"image_id": "img", "tags_digest": d, "confidence": 0.1, "strategy": "s",
                                       "payload": {}} for d in ("a", "b")])
        assert store.count_fused("fused-2+y") == 2
    with ResultStore(store_url) as store:  # opening again migrates nothing twice
        assert store.count("clip_embeddings") == 1
