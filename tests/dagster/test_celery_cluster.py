"""The asset graph on two Celery workers (`default` and `gpu`) through `charattr run`'s code path,
and the two traps of dagster-celery: a worker's pool child killed in the middle of a step, and a
whole worker killed in the middle of a step. Needs a Redis server: $CHARATTR_TEST_REDIS_URL
(.ci/run starts one with .ci/redis.sh) or a local `redis-server` binary, started here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg
import pyarrow.parquet as pq
import pytest

from charattr_core.store import ResultStore
from charattr_dagster.runner import run_graph
from charattr_dagster.settings import Settings
from dagster_testing import IMAGES_PER_SHARD, SHARD_KEYS, make_settings

pytest.importorskip("dagster_celery", reason="dagster-celery is not installed (pip install 'charattr[celery]')")

REDIS_URL_ENV = "CHARATTR_TEST_REDIS_URL"
IMAGES = IMAGES_PER_SHARD * len(SHARD_KEYS)
# Redis hands a task whose worker vanished to another worker after this long (executors.py):
# 2 x shards_per_run (2) x 8 s. Longer than any step here, short enough for a test.
SHARD_SECONDS = 8


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get(REDIS_URL_ENV):
        yield os.environ[REDIS_URL_ENV].rstrip("/")
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"no redis-server binary here and {REDIS_URL_ENV} is unset (.ci/run starts one)")
    folder = tmp_path_factory.mktemp("redis")
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=20)


class Worker:
    """`charattr worker` in a process group of its own (killed as a whole when asked)."""

    def __init__(self, queue: str, env: dict[str, str], log: Path):
        self.queue, self.name = queue, f"{queue}@test"
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "charattr_core.cli", "worker", "--queue", queue,
                                      "--concurrency", "1", "--name", self.name],
                                     env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while f"{self.name} ready." not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"worker {self.name} did not start:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def pool_children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def kill_child(self) -> None:
        (child,) = self.pool_children()
        os.kill(child, signal.SIGKILL)

    def kill_all(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: must exit by itself
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                raise


def _product(settings: Settings) -> list[dict]:
    folder = Path(settings.warehouse) / "fused_attributes"
    rows = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: r["image_id"])


def _events(instance: dg.DagsterInstance, job: str) -> list[dg.EventLogEntry]:
    runs = instance.get_runs(dg.RunsFilter(job_name=job), limit=1)
    return list(instance.all_logs(runs[0].run_id)) if runs else []


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _started(instance: dg.DagsterInstance, job: str, step: str) -> int:
    return sum(1 for e in _events(instance, job) if e.dagster_event and e.step_key == step
               and e.dagster_event.event_type == dg.DagsterEventType.STEP_START)


def _succeeded(instance: dg.DagsterInstance, job: str, step: str) -> bool:
    return any(e.dagster_event and e.step_key == step and e.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS
               for e in _events(instance, job))


class StoreLock:
    """Holds the SQLite results database's write lock, so that a step that gets to its first write
    waits there: the kills below land inside a step, not before or after it."""

    def __init__(self, settings: Settings):
        self.conn = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)

    def __enter__(self) -> "StoreLock":
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc) -> None:
        self.conn.execute("ROLLBACK")


@pytest.mark.slow
def test_the_graph_on_two_celery_workers_and_a_killed_worker(redis_url, demo_source, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    celery = dict(executor="celery", celery_broker=f"{redis_url}/0", celery_backend=f"{redis_url}/1",
                  shards_per_run=2, celery_shard_seconds=SHARD_SECONDS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHARATTR_CELERY_BROKER": celery["celery_broker"],
           "CHARATTR_CELERY_BACKEND": celery["celery_backend"], "CHARATTR_SHARDS_PER_RUN": "2",
           "CHARATTR_CELERY_SHARD_SECONDS": str(SHARD_SECONDS)}
    env.pop("DAGSTER_HOME")  # workers need none: the instance comes with each task
    workers = {q: Worker(q, env, tmp_path / f"{q}.log") for q in ("default", "gpu")}
    try:
        in_process = make_settings(demo_source, tmp_path / "in_process")
        with dg.instance_for_test() as reference:
            assert not run_graph(in_process, reference).failed_runs
        for w in workers.values():
            w.wait_ready()

        # 1. The whole graph on the workers: every step in a worker, clip only on the gpu one.
        cluster = make_settings(demo_source, tmp_path / "cluster", **celery)
        with dg.DagsterInstance.get() as instance:
            summary = run_graph(cluster, instance)
            assert not summary.failed_runs, summary.failed_runs
            runs = instance.get_runs()
            assert len(runs) == summary.runs == 4
            for run in runs:
                events = [e for e in instance.all_logs(run.run_id) if e.dagster_event]
                steps = {e.step_key for e in events if e.dagster_event.event_type == dg.DagsterEventType.STEP_START}
                placed = {e.step_key: e.dagster_event.event_specific_data.metadata["Celery worker"].value
                          for e in events if e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
                          and "Celery worker" in (e.dagster_event.event_specific_data.metadata or {})}
                assert steps and set(placed) == steps, run.job_name  # each step announced by a worker
                assert all(w == ("gpu@test" if s == "clip_embeddings" else "default@test") for s, w in placed.items())
                pids = {e.dagster_event.pid for e in events if e.dagster_event.event_type
                        in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS)}
                assert os.getpid() not in pids and None not in pids
        assert _product(cluster) == _product(in_process) and len(_product(cluster)) == IMAGES

        # 2. Kills in the middle of steps, on a fresh store and warehouse so that the steps compute.
        killed = make_settings(demo_source, tmp_path / "killed", **celery)
        ResultStore(killed.database_url).close()  # the tables exist before the test locks the file
        (tmp_path / "dagster_home_2").mkdir()  # a second instance: the event-log checks see only these runs
        with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home_2")) as instance:
            outcome: dict = {}
            runner = threading.Thread(target=lambda: outcome.update(summary=run_graph(killed, instance)))
            runner.start()
            # The gpu worker's pool child dies inside clip_embeddings: Celery requeues the task.
            _wait_for(lambda: _succeeded(instance, "ingest_shards", "raw_images"), "raw_images")
            with StoreLock(killed):
                _wait_for(lambda: _started(instance, "ingest_shards", "clip_embeddings") == 1, "clip_embeddings")
                time.sleep(1)
                workers["gpu"].kill_child()
            # The whole default worker dies inside fused_attributes; a new one takes the task over
            # once the visibility timeout has passed.
            _wait_for(lambda: _succeeded(instance, "train_fusion", "fusion_policy"), "train_fusion", timeout=300)
            with StoreLock(killed):
                _wait_for(lambda: _started(instance, "fuse_shards", "fused_attributes") == 1, "fused_attributes")
                time.sleep(1)
                workers["default"].kill_all()
            workers["default"] = Worker("default", env, tmp_path / "default2.log")
            runner.join(timeout=600)
            assert not runner.is_alive(), "the run waited forever after a worker was killed"
            assert not outcome["summary"].failed_runs, outcome["summary"].failed_runs
            assert _started(instance, "ingest_shards", "clip_embeddings") == 2  # ran again after the kill
            assert _started(instance, "fuse_shards", "fused_attributes") == 2
        with ResultStore(killed.database_url) as store:
            assert store.count_fused() == IMAGES  # one row per image, none lost or doubled
        assert [r["image_id"] for r in _product(killed)] == [r["image_id"] for r in _product(in_process)]
    finally:
        for w in workers.values():
            w.stop()
    for w in workers.values():
        assert w.proc.returncode == 0, f"{w.name} did not shut down cleanly on SIGTERM"
