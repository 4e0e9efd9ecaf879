"""The warehouse (streamed, atomic Parquet files), the joins between its tables, partition-range
helpers and settings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from charattr_core.errors import ConfigError
from charattr_core.records import AttributeEstimate, ClipEmbedding, ImageRecord, TagParse
from charattr_core.schema import load_vocabulary
from charattr_dagster.partitions import RANGE_END_TAG, RANGE_START_TAG, contiguous_ranges, range_run_request
from charattr_dagster.settings import Settings
from charattr_dagster.tables import CLIP_SCHEMA, RAW_SCHEMA, clip_row, iter_signals, tag_parse_row, tag_parse_schema
from charattr_dagster.warehouse import Warehouse

SCHEMA = pa.schema([pa.field("image_id", pa.string()), pa.field("n", pa.int64())])


def test_writer_streams_batches_into_one_file(tmp_path):
    wh = Warehouse(root=str(tmp_path))
    with wh.writer("raw_images", "shard_0", SCHEMA) as out:
        out.write_rows([{"image_id": "a", "n": 1}, {"image_id": "b", "n": 2}])
        out.write_rows([{"image_id": "c", "n": 3}])
    assert out.rows == 3
    assert wh.has("raw_images", "shard_0")
    assert [r["image_id"] for r in wh.iter_rows("raw_images", ["shard_0"])] == ["a", "b", "c"]


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    wh = Warehouse(root=str(tmp_path))
    with wh.writer("raw_images", "shard_0", SCHEMA) as out:
        out.write_rows([{"image_id": "old", "n": 0}])
    with pytest.raises(RuntimeError):
        with wh.writer("raw_images", "shard_0", SCHEMA) as out:
            out.write_rows([{"image_id": "new", "n": 1}])
            raise RuntimeError("crash in the middle of a shard")
    # The previous complete file is untouched and no partial file is left behind.
    assert [r["image_id"] for r in wh.iter_rows("raw_images")] == ["old"]
    assert [p.name for p in (tmp_path / "raw_images").iterdir()] == ["shard_0.parquet"]


def test_partition_keys_that_are_paths_or_start_with_a_dot_round_trip(tmp_path):
    wh = Warehouse(root=str(tmp_path))
    for key in (".", "nested/part-1.parquet", "a b%c"):
        with wh.writer("tag_parses", key, SCHEMA) as out:
            out.write_rows([{"image_id": key, "n": 1}])
    assert wh.partitions("tag_parses") == sorted([".", "nested/part-1.parquet", "a b%c"])
    assert all(p.parent == tmp_path / "tag_parses" for p in (tmp_path / "tag_parses").iterdir())
    assert [r["image_id"] for r in wh.iter_rows("tag_parses", ["."])] == ["."]


def test_iter_batches_streams_only_the_requested_existing_partitions(tmp_path):
    wh = Warehouse(root=str(tmp_path))
    for shard, n in (("s1", 5), ("s2", 7), ("s3", 2)):
        with wh.writer("clip_embeddings", shard, SCHEMA) as out:
            out.write_rows([{"image_id": f"{shard}-{i}", "n": i} for i in range(n)])
    batches = list(wh.iter_batches("clip_embeddings", ["s1", "s2", "missing"], batch_size=3))
    assert all(b.num_rows <= 3 for b in batches)
    assert sum(b.num_rows for b in batches) == 12
    assert wh.count_rows("clip_embeddings") == 14
    assert list(wh.iter_batches("nothing_here")) == []


def test_contiguous_ranges_follow_partition_order_and_size():
    order = ["a", "b", "c", "d", "e", "f"]
    assert list(contiguous_ranges(["a", "b", "d", "e", "f"], order, 2)) == [["a", "b"], ["d", "e"], ["f"]]
    assert list(contiguous_ranges(["f", "a"], order, 10)) == [["a"], ["f"]]


def test_range_run_request_uses_range_tags_for_several_keys():
    several = range_run_request(["a", "b", "c"])
    assert several.tags[RANGE_START_TAG] == "a" and several.tags[RANGE_END_TAG] == "c"
    assert range_run_request(["a"]).partition_key == "a"


def test_settings_from_env_defaults_and_overrides(tmp_path):
    defaults = Settings.from_env({"CHARATTR_DATA_DIR": str(tmp_path)})
    assert defaults.source == str(tmp_path / "sample")
    # one source, one namespace: the source's own folder holds its warehouse and reports
    assert defaults.warehouse == str(tmp_path / "sources" / defaults.namespace / "warehouse")
    assert defaults.reports == str(tmp_path / "sources" / defaults.namespace / "reports")
    assert defaults.database_url == f"sqlite:///{tmp_path / 'charattr.db'}"
    assert defaults.model_name == "ViT-B-32" and defaults.pretrained == "openai"
    custom = Settings.from_env({"CHARATTR_DATA_DIR": str(tmp_path), "CHARATTR_MODEL": "charattr-tiny",
                                "CHARATTR_PRETRAINED": "none", "CHARATTR_SHARDS_PER_RUN": "4"})
    assert (custom.model_name, custom.pretrained, custom.shards_per_run) == ("charattr-tiny", None, 4)


@pytest.mark.parametrize("env", [{"CHARATTR_SHARDS_PER_RUN": "zero"}, {"CHARATTR_SHARDS_PER_RUN": "0"},
                                 {"CHARATTR_MAX_FAILED_FRACTION": "1.5"}])
def test_settings_reject_bad_values_with_one_sentence(env):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert next(iter(env)) in str(info.value)


def _misaligned_shard(tmp_path):
    """A shard whose tag_parses and clip_embeddings each hold one row per usable raw image."""
    vocabulary = load_vocabulary()
    wh = Warehouse(root=str(tmp_path))
    records = [ImageRecord(image_id=f"id{i}", source_uri=f"/x/{i}.png", shard="s", width=8, height=8, format="PNG")
               for i in range(5)]
    records[2].status, records[2].error = "failed", "truncated"
    with wh.writer("raw_images", "s", RAW_SCHEMA) as out:
        out.write_rows([r.to_dict() for r in records])
    return wh, vocabulary, [r for r in records if r.ok]


def _write_tag_parses(wh, vocabulary, ids):
    with wh.writer("tag_parses", "s", tag_parse_schema(vocabulary)) as out:
        out.write_rows([tag_parse_row(TagParse(i, {"gender": AttributeEstimate("gender", ("female",), 0.9)}))
                        for i in ids])


@pytest.mark.parametrize("tag_ids, problem", [
    (["id0", "id1", "id4"], "row 2 is image id4, expected id3"),  # a row missing in the middle
    (["id0", "id1", "id3"], "ends after 3 rows, before image id4"),  # a partial write
    (["old0", "old1", "old3", "old4"], "row 0 is image old0, expected id0"),  # a stale file of other images
    (["id0", "id1", "id3", "id4", "id5"], "more than the 4 rows"),  # a longer, stale file
])
def test_iter_signals_fails_loudly_when_a_signal_file_does_not_line_up(tmp_path, tag_ids, problem):
    from charattr_dagster.tables import MisalignedShardError

    wh, vocabulary, ok = _misaligned_shard(tmp_path)
    _write_tag_parses(wh, vocabulary, tag_ids)
    with pytest.raises(MisalignedShardError) as info:
        for _batch in iter_signals(wh, "s", with_embeddings=False, batch_size=2):
            pass
    message = str(info.value)
    assert problem in message and "tag_parses" in message and "'s'" in message and "materialize tag_parses" in message
    assert info.value.allow_retries is False


def test_iter_signals_joins_by_position_across_batches_and_gaps(tmp_path):
    """tag_parses / clip_embeddings hold one row per usable raw_images row (failed images left
    out), in order; the join must stay aligned across batch boundaries."""
    vocabulary = load_vocabulary()
    wh = Warehouse(root=str(tmp_path))
    records = [ImageRecord(image_id=f"id{i}", source_uri=f"/x/{i}.png", shard="s", width=8, height=8, format="PNG")
               for i in range(5)]
    records[2].status, records[2].error, records[2].image_id = "failed", "truncated", "id2"
    with wh.writer("raw_images", "s", RAW_SCHEMA) as out:
        out.write_rows([r.to_dict() for r in records])
    ok = [r for r in records if r.ok]  # id0 id1 id3 id4
    with wh.writer("tag_parses", "s", tag_parse_schema(vocabulary)) as out:
        out.write_rows([tag_parse_row(TagParse(r.image_id, {"gender": AttributeEstimate("gender", ("female",), 0.9)},
                                               tag_count=i)) for i, r in enumerate(ok)])
    unit = np.zeros(4, dtype=np.float16)
    unit[0] = 1
    with wh.writer("clip_embeddings", "s", CLIP_SCHEMA) as out:  # as the clip_embeddings asset writes them
        out.write_rows([clip_row(ClipEmbedding(r.image_id, "m", None if r.image_id == "id3" else unit,
                                               error="bad" if r.image_id == "id3" else None)) for r in ok])

    joined = [s for batch in iter_signals(wh, "s", batch_size=2) for s in batch]
    assert [s.record.image_id for s in joined] == ["id0", "id1", "id3", "id4"]
    assert [s.tag_parse.tag_count for s in joined] == [0, 1, 2, 3]
    assert [s.embedding is not None for s in joined] == [True, True, False, True]
    assert joined[3].tag_parse.estimates["gender"].values == ("female",)
    only = [s.record.image_id for b in iter_signals(wh, "s", keep=lambda i: i in {"id1", "id4"}) for s in b]
    assert only == ["id1", "id4"]
