"""`adapted_clip`: the train-clip core function as an asset, fed from the warehouse (issue 14)."""

from __future__ import annotations

import dagster as dg

from charattr_core.clip_training import resolve_adapted_model, rows_from_source, training_data
from charattr_core.schema import load_vocabulary
from charattr_core.synthetic import write_demo_dataset
from charattr_dagster.definitions import build_definitions
from charattr_dagster.warehouse import Warehouse

from dagster_testing import make_settings, materialization, register, run_job


def test_adapted_clip_trains_on_the_training_split_from_the_warehouse(tmp_path, instance):
    source = tmp_path / "sample"
    write_demo_dataset(source, n_images=24, n_shards=2, size=64, seed=3)
    settings = make_settings(source, tmp_path)
    defs = build_definitions(settings)
    register(instance)
    run_job(defs, instance, "ingest_shards", ["shard_000"])
    run_job(defs, instance, "ingest_shards", ["shard_001"])
    config = {"ops": {"adapted_clip": {"config": {"model_name": "charattr-tiny", "epochs": 1, "batch_size": 4}}}}
    result = defs.resolve_job_def("adapt_clip").execute_in_process(instance=instance, run_config=config)
    meta = materialization(result, "adapted_clip")
    vocabulary = load_vocabulary()
    expected = training_data(rows_from_source(source, vocabulary), vocabulary)  # what the CLI would train on
    assert meta["training_images"] == len(expected.images) >= 2
    assert meta["data_fingerprint"] == expected.fingerprint
    folder = Warehouse(root=settings.warehouse).asset_dir("adapted_clip")
    adapted = resolve_adapted_model(folder)
    assert adapted is not None and meta["model_key"] == adapted.model_key
    assert meta["use_with"] == f"CHARATTR_PRETRAINED={folder}"
    assert dg.AssetKey("adapted_clip") in {e.asset_key for e in result.get_asset_materialization_events()}
