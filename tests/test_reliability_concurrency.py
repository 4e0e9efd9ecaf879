"""Concurrency: several Dagster runs, each on the multiprocess executor with 4 workers, write the
same SQLite results database at the same moment — no "database is locked" failure, no lost write.

Four partitions are materialized at once by four `dagster asset materialize` processes (the
command a user or a deployment runs). Each run executes its steps in separate processes, so up
to 8 processes write the database together; a test-only barrier (tests/reliability_faults.py)
holds the first write of every stage in every process until all four runs are there, so the
writes really collide instead of merely overlapping by luck.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from charattr_core.store import ResultStore
from charattr_core.synthetic import write_demo_dataset
from reliability_faults import fault_env

BIN = Path(sys.executable).parent
N_SHARDS, PER_SHARD = 4, 6
STAGES = ("raw_images", "tag_parses", "clip_embeddings")
# Four workers per run; steps are forked from a server that has imported charattr once, so that a
# step does not spend seconds on imports (the default "spawn" works too, only slower).
EXECUTION = {"execution": {"config": {"multiprocess": {
    "max_concurrent": 4,
    "start_method": {"forkserver": {"preload_modules": ["charattr_dagster.definitions", "charattr_core.clip"]}},
}}}}

pytestmark = pytest.mark.slow


def test_four_partitions_in_parallel_runs_write_one_sqlite_database_without_loss(tmp_path):
    source, home, data = tmp_path / "src", tmp_path / "dagster_home", tmp_path / "data"
    write_demo_dataset(source, n_images=N_SHARDS * PER_SHARD, n_shards=N_SHARDS, seed=11, size=64)
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # no pool limit: the steps collide
    shards = sorted(p.name for p in source.iterdir() if p.is_dir())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("shards", shards)

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CHARATTR_SOURCE": str(source), "CHARATTR_DATA_DIR": str(data),
           "CHARATTR_MODEL": "charattr-tiny", "CHARATTR_PRETRAINED": "none", "CHARATTR_DEVICE": "cpu",
           **fault_env(tmp_path, f"barrier:{barrier}:{N_SHARDS}")}
    runs = [subprocess.Popen(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "charattr_dagster.definitions",
         "--select", ",".join(STAGES), "--partition", shard, "--config-json", json.dumps(EXECUTION)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for shard in shards]
    outputs = [run.communicate(timeout=540)[0] for run in runs]

    for shard, run, output in zip(shards, runs, outputs):
        assert run.returncode == 0, f"{shard}:\n{output[-4000:]}"
        assert "multiprocess executor" in output  # steps ran in their own processes
        assert "database is locked" not in output.lower() and "STEP_FAILURE" not in output
    for stage in STAGES:  # every run's step of every stage was held at the barrier until all were there
        assert len(os.listdir(barrier / stage)) == N_SHARDS, stage

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        assert len(records) == N_SHARDS
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        for stage in STAGES:
            assert instance.get_materialized_partitions(dg.AssetKey(stage)) == set(shards), stage

    with ResultStore(f"sqlite:///{data / 'charattr.db'}") as store:
        for stage in STAGES:  # no lost write: every image of every shard is in the database once
            (version,) = store.stage_versions(stage)
            assert store.count(stage, version) == N_SHARDS * PER_SHARD, stage
