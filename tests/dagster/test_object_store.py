"""The warehouse on an fsspec filesystem (`memory://`, `file://`; s3:// and gs:// go through the
same code with s3fs/gcsfs): streamed tables, temp-then-move writes, and the graph on it."""

from __future__ import annotations

import uuid

import dagster as dg
import fsspec
import pyarrow as pa
import pytest

from charattr_core.errors import ConfigError
from charattr_dagster.runner import run_graph
from charattr_dagster.warehouse import Warehouse
from dagster_testing import IMAGES_PER_SHARD, SHARD_KEYS, make_settings

SCHEMA = pa.schema([pa.field("image_id", pa.string()), pa.field("n", pa.int64())])


@pytest.fixture(params=["memory", "file"])
def url(request, tmp_path) -> str:
    if request.param == "memory":
        return f"memory://charattr-test-{uuid.uuid4().hex[:8]}/warehouse"
    return f"file://{tmp_path / 'warehouse'}"


def test_tables_round_trip_and_a_failed_write_keeps_the_previous_file(url):
    wh = Warehouse(root=url)
    with wh.writer("raw_images", "shard/0", SCHEMA) as out:
        out.write_rows([{"image_id": "a", "n": 1}, {"image_id": "b", "n": 2}])
        out.write_rows([{"image_id": "c", "n": 3}])
    with pytest.raises(RuntimeError):
        with wh.writer("raw_images", "shard/0", SCHEMA) as out:
            out.write_rows([{"image_id": "new", "n": 9}])
            raise RuntimeError("crash in the middle of a shard")
    assert wh.partitions("raw_images") == ["shard/0"] and wh.has("raw_images", "shard/0")
    assert not wh.has("raw_images", "missing")
    assert [r["image_id"] for r in wh.iter_rows("raw_images", batch_size=2)] == ["a", "b", "c"]
    assert wh.count_rows("raw_images", ["shard/0", "missing"]) == 3
    fs, root = fsspec.core.url_to_fs(url)
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/raw_images", detail=False)] == ["shard%2F0.parquet"]
    assert str(wh.path("raw_images", "shard/0")).startswith(url.split("://")[0] + "://")
    long_key = "長い名前" * 40  # its file name is cut and hashed; the key comes back from the metadata
    with wh.writer("tag_parses", long_key, SCHEMA) as out:
        out.write_rows([{"image_id": "x", "n": 0}])
    assert wh.partitions("tag_parses") == [long_key] and wh.count_rows("tag_parses", [long_key]) == 1


def test_an_object_store_warehouse_needs_a_shared_folder_for_the_artefacts(tmp_path):
    with pytest.raises(ConfigError, match="CHARATTR_WAREHOUSE_ARTIFACTS"):
        Warehouse(root="memory://x/wh").asset_dir("attribute_probes")
    assert Warehouse(root="memory://x/wh", artifacts=str(tmp_path)).asset_dir("fusion_policy") == tmp_path / "fusion_policy"


def test_the_graph_runs_with_its_tables_on_an_object_store(demo_source, tmp_path):
    url = f"memory://charattr-graph-{uuid.uuid4().hex[:8]}/warehouse"
    settings = make_settings(demo_source, tmp_path, warehouse=url, warehouse_artifacts=str(tmp_path / "artifacts"))
    with dg.instance_for_test() as instance:
        summary = run_graph(settings, instance)
    assert not summary.failed_runs, summary.failed_runs
    wh = Warehouse(root=url)
    for asset in ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes"):
        assert wh.partitions(asset) == list(SHARD_KEYS), asset
    assert wh.count_rows("fused_attributes") == IMAGES_PER_SHARD * len(SHARD_KEYS)
    assert (tmp_path / "artifacts" / "fusion_policy" / "policy.json").is_file()
    assert not (tmp_path / "warehouse").exists()
