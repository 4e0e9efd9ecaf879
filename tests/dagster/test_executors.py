"""Executor selection (in-process / multiprocess / Celery), the gpu queue, the Celery settings
that survive a killed worker, `charattr worker`'s configuration and the process-level model cache.
The cluster itself runs in test_celery_cluster.py."""

from __future__ import annotations

import argparse
import sys
import types

import dagster as dg
import pytest

from charattr_core.errors import ConfigError
from charattr_dagster import executors, resources
from charattr_dagster.definitions import build_definitions
from charattr_dagster.executors import (build_executor, celery_app_settings, executor_run_config,
                                        reconstructable_job, visibility_timeout)
from charattr_dagster.jobs import ALL_JOBS, STEP_RETRY_POLICY
from charattr_dagster.settings import Settings
from dagster_testing import make_settings

pytest.importorskip("dagster_celery", reason="dagster-celery is not installed (pip install 'charattr[celery]')")


def _executor_config(settings: Settings, run_config: dict | None = None) -> dict:
    job = build_definitions(settings).resolve_job_def("ingest_shards")
    resolved = dg.validate_run_config(job, run_config or {})
    return resolved["execution"]["charattr"]


def test_the_executor_setting_switches_every_job_and_celery_gets_urls_and_loss_settings(tmp_path):
    default = make_settings(tmp_path, tmp_path)
    assert list(_executor_config(default)) == ["multiprocess"]  # launched runs on a laptop, as before
    assert executor_run_config(default) == {"execution": {"config": {"in_process": {}}}}  # `charattr run`
    celery = make_settings(tmp_path, tmp_path, executor="celery", celery_broker="redis://broker:6379/0",
                           celery_backend="redis://broker:6379/1", shards_per_run=3, celery_shard_seconds=100)
    defs = build_definitions(celery)
    assert {defs.resolve_job_def(job.name).executor_def.name for job in ALL_JOBS} == {"charattr"}
    config = _executor_config(celery)["celery"]
    assert (config["broker"], config["backend"]) == ("redis://broker:6379/0", "redis://broker:6379/1")
    source = config["config_source"]
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"]
    assert source["broker_transport_options"]["visibility_timeout"] == visibility_timeout(celery) == 600
    # The launchpad can pick another executor for one run.
    assert list(_executor_config(celery, {"execution": {"config": {"in_process": {}}}})) == ["in_process"]


def test_keys_given_in_the_launchpad_merge_with_the_loss_settings(tmp_path):
    settings = make_settings(tmp_path, tmp_path, executor="celery")
    executor_def = build_executor(settings)
    given = {"celery": {"config_source": {"worker_prefetch_multiplier": 2,
                                          "broker_transport_options": {"max_retries": 9}}}}
    config = dg.validate_run_config(build_definitions(settings).resolve_job_def("report"),
                                    {"execution": {"config": given}})["execution"]["charattr"]
    executor = executor_def.executor_creation_fn(types.SimpleNamespace(executor_config=config))
    source = executor.app_args()["config_source"].__dict__
    assert source["task_acks_late"] and source["worker_prefetch_multiplier"] == 2
    assert source["broker_transport_options"] == {**celery_app_settings(settings)["broker_transport_options"],
                                                  "max_retries": 9}


def test_a_broker_password_is_not_stored_with_the_job(tmp_path, monkeypatch):
    from dagster._serdes import serialize_value

    monkeypatch.setenv("CHARATTR_CELERY_BROKER", "")  # restored after the test: building sets it
    monkeypatch.setenv("CHARATTR_CELERY_BACKEND", "")
    settings = make_settings(tmp_path, tmp_path, executor="celery", celery_broker="redis://:s3cret@head:6379/0",
                             celery_backend="redis://:s3cret@head:6379/1")
    job = build_definitions(settings).resolve_job_def("report")
    with dg.instance_for_test():
        assert "s3cret" not in serialize_value(job.get_job_snapshot())
    assert _executor_config(settings)["celery"]["broker"] == "redis://:s3cret@head:6379/0"  # read from the variable


def test_visibility_timeout_follows_the_longest_step():
    base = Settings(source="/x")
    assert visibility_timeout(base) == 2 * base.shards_per_run * 600
    assert visibility_timeout(Settings(source="/x", shards_per_run=1, celery_shard_seconds=3)) == executors.MIN_VISIBILITY_TIMEOUT


def test_only_clip_embeddings_goes_to_the_gpu_queue_and_every_step_has_a_retry_policy(tmp_path):
    defs = build_definitions(make_settings(tmp_path, tmp_path))
    with dg.instance_for_test():
        job = defs.resolve_job_def("process_shards")
        queues = {node.name: node.definition.tags.get("dagster-celery/queue") for node in job.graph.node_dict.values()}
    assert queues == {"raw_images": None, "tag_parses": None, "clip_embeddings": "gpu", "fused_attributes": None}
    report = defs.resolve_job_def("report")
    from dagster._core.definitions.dependency import NodeHandle

    assert all(report.get_retry_policy_for_handle(NodeHandle(name, None)) is not None
               for name in report.graph.node_dict)
    assert STEP_RETRY_POLICY.max_retries >= 1


def test_settings_read_the_executor_and_reject_unknown_ones():
    env = {"CHARATTR_EXECUTOR": "celery", "CHARATTR_CELERY_BROKER": "redis://h:1/0", "CHARATTR_CELERY_SHARD_SECONDS": "42"}
    settings = Settings.from_env(env)
    assert (settings.executor, settings.celery_broker, settings.celery_shard_seconds) == ("celery", "redis://h:1/0", 42)
    assert Settings.from_env({}).executor is None
    with pytest.raises(ConfigError, match="CHARATTR_EXECUTOR"):
        Settings.from_env({"CHARATTR_EXECUTOR": "dask"})
    assert Settings.from_env({"CHARATTR_WAREHOUSE": "s3://bucket/wh"}).warehouse == "s3://bucket/wh"


def test_run_option_selects_the_executor(tmp_path):
    from charattr_core.cli import build_parser
    from charattr_dagster.cli import settings_from_args

    args = build_parser().parse_args(["run", str(tmp_path), "--executor", "celery", "--warehouse", "gs://b/w"])
    settings = settings_from_args(args)
    assert settings.executor == "celery" and settings.warehouse == "gs://b/w"


def test_workers_rebuild_the_job_from_the_run_without_a_database_password(tmp_path, monkeypatch):
    url = "postgresql://charattr:s3cret@db.example:5432/charattr"
    settings = make_settings(tmp_path, tmp_path, database_url=url)
    monkeypatch.delenv("CHARATTR_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="CHARATTR_DATABASE_URL"):  # a worker without the variable
        executors.job_from_settings(executors.settings_payload(settings), "ingest_shards")
    monkeypatch.setenv("CHARATTR_DATABASE_URL", url)
    recon = reconstructable_job(settings, "ingest_shards")
    assert "s3cret" not in str(recon.get_python_origin())  # what the run stores and the tasks carry
    assert recon.get_definition().name == "ingest_shards"


def test_worker_config_module_carries_the_loss_settings_and_the_queue(monkeypatch, tmp_path):
    from charattr_dagster import worker

    config = worker.worker_config("redis://b/0", "redis://b/1", celery_app_settings(Settings(source="/x")))
    monkeypatch.delitem(sys.modules, worker.CONFIG_MODULE, raising=False)
    worker.install_config_module(config)
    from dagster_celery.make_app import make_app

    app = make_app()  # what `celery -A dagster_celery.app` builds in the worker
    assert app.conf.broker_url == "redis://b/0" and app.conf.result_backend == "redis://b/1"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.broker_transport_options["visibility_timeout"] == 2 * Settings(source="/x").shards_per_run * 600
    argv = worker.celery_argv("gpu", "gpu0@%h", 1, "INFO")
    assert argv[argv.index("--queues") + 1] == "gpu" and argv[argv.index("--concurrency") + 1] == "1"
    argv = worker.celery_argv("default", "cpu@%h", 4, "INFO")
    assert argv[argv.index("--queues") + 1] == executors.DEFAULT_QUEUE


def test_worker_refuses_bad_options_and_an_unreachable_broker(monkeypatch):
    from charattr_core.cli import main

    monkeypatch.delitem(sys.modules, "dagster_celery_config", raising=False)
    assert main(["worker", "--queue", "default", "--gpu", "0"]) == 1
    assert main(["worker", "--queue", "default", "--broker", "redis://127.0.0.1:1/0"]) == 1


def test_the_model_cache_is_keyed_by_model_key_and_resolved_device(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(resources, "_MODELS", resources.collections.OrderedDict())
    import charattr_core.clip as clip

    monkeypatch.setattr(clip, "load_clip", lambda *a, **k: loads.append((a, k)) or object())
    first = resources.cached_clip_model("charattr-tiny", None, "charattr-tiny/random", "auto", "fp32", None)
    assert resources.cached_clip_model("charattr-tiny", None, "charattr-tiny/random", "cpu", "fp32", None) is first
    # The same checkpoint path with new bytes has a new model key: loaded again, never the stale model.
    assert resources.cached_clip_model("charattr-tiny", "/ckpt.pt", "charattr-tiny/file:2", "cpu", "fp32", None) is not first
    assert len(loads) == 2
    # Two resource objects (two steps of one worker) share one model.
    # (precision fp32: the PyTorch reference, whose key is the plain `charattr-tiny/random`)
    a = resources.ClipModelResource(model_name="charattr-tiny", pretrained=None, device="cpu", precision="fp32")
    b = resources.ClipModelResource(model_name="charattr-tiny", pretrained=None, device="auto", precision="fp32")
    assert a.get() is b.get() is first and len(loads) == 2  # auto = cpu here
