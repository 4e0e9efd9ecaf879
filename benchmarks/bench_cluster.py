"""The asset graph on Celery workers: overhead per step, and throughput with 1 vs 2 workers per queue.

    .venv/bin/python -m benchmarks.bench_cluster [--quick] [--images 96] [--shards 4]

Workload: the synthetic sample (`charattr demo-data`, `--images` in `--shards` shards), the tiny
CLIP model (`charattr-tiny`, random weights: the point is the orchestration, not the model), one
`process_shards` run per shard (raw_images, tag_parses, clip_embeddings, fused_attributes).
Redis is a local `redis-server` on a free port; the Dagster instance is SQLite in a temporary
DAGSTER_HOME (one machine). Measured in this one process, interleaved where it matters:

- overhead per step: the same runs over a filled cache (every step finds its results and
  computes nothing), one after the other, in-process vs on warm Celery workers; the difference
  divided by the number of steps;
- throughput: every shard's run submitted at once, on a fresh store, with 1 worker per queue
  (`default` + `gpu`) vs 2 workers per queue; images/s and the ratio.

Workers are warmed up first (their first task imports Dagster, torch and the model). On a
shared 2-core machine two workers per queue have little to gain; the ratio is what it is here.
Writes benchmarks/results/cluster.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import DATA_DIR, Report, Target, header, machine_info, print_table

STEPS_PER_RUN = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker(queue: str, name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "charattr_core.cli", "worker", "--queue", queue, "--concurrency",
                             "1", "--name", name], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while f"{name} ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="24 images in 4 shards")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args(argv)
    images, shards = (24, 4) if args.quick else (args.images, args.shards)
    redis = shutil.which("redis-server")
    if redis is None:
        print("bench_cluster: needs a redis-server binary (Debian package redis-server)", file=sys.stderr)
        return 1
    info = machine_info(with_torch=False)
    header("cluster: Celery workers vs in-process", info)

    import dagster as dg

    from charattr_core.synthetic import write_demo_dataset
    from charattr_dagster.executors import reconstructable_job
    from charattr_dagster.partitions import SHARDS
    from charattr_dagster.settings import Settings

    sample = DATA_DIR / f"cluster_sample_{images}_{shards}"
    if not (sample / "dataset.json").is_file():
        write_demo_dataset(sample, n_images=images, n_shards=shards, size=64, seed=0)
    work = Path(tempfile.mkdtemp(prefix="charattr-bench-cluster-"))
    port = _free_port()
    server = subprocess.Popen([redis, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    broker, backend = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHARATTR_CELERY_BROKER": broker, "CHARATTR_CELERY_BACKEND": backend,
           "CHARATTR_SHARDS_PER_RUN": "1"}
    env.pop("DAGSTER_HOME", None)
    os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
    (work / "dagster_home").mkdir()
    (work / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    workers: list[subprocess.Popen] = []
    rows = []
    try:
        def settings(name: str, executor: str | None) -> Settings:
            return Settings(source=str(sample), model_name="charattr-tiny", pretrained=None, device="cpu",
                            batch_size=8, database_url=f"sqlite:///{work / name / 'charattr.db'}",
                            warehouse=str(work / name / "warehouse"), reports=str(work / name / "reports"),
                            shards_per_run=1, executor=executor, celery_broker=broker, celery_backend=backend)

        with dg.DagsterInstance.get() as instance:
            from charattr_core.sources import open_source
            keys = open_source(str(sample)).shards()
            instance.add_dynamic_partitions(SHARDS, keys)

            def run_all(s: Settings, concurrent: bool) -> float:
                executor = s.executor or "in_process"
                config = {"execution": {"config": {executor: {}}},
                          "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

                def one(key: str) -> bool:
                    with dg.execute_job(reconstructable_job(s, "process_shards"), instance=instance, run_config=config,
                                        tags={"dagster/partition": key}) as result:
                        return result.success
                started = time.perf_counter()
                if concurrent:
                    with ThreadPoolExecutor(len(keys)) as pool:
                        ok = list(pool.map(one, keys))
                else:
                    ok = [one(k) for k in keys]
                if not all(ok):
                    raise RuntimeError(f"a run failed ({executor})")
                return time.perf_counter() - started

            # In-process: fills the cache that the overhead rounds re-read.
            cached_in, cached_celery = settings("cached", None), settings("cached", "celery")
            first_in_process = run_all(cached_in, concurrent=False)
            workers += [_start_worker("default", "default1@bench", env, work / "default1.log"),
                        _start_worker("gpu", "gpu1@bench", env, work / "gpu1.log")]
            run_all(cached_celery, concurrent=True)  # warm-up: every worker imports its code once
            runs = len(keys)
            overhead_in, overhead_celery = [], []
            for _ in range(2):  # interleaved rounds
                overhead_in.append(run_all(cached_in, concurrent=False))
                overhead_celery.append(run_all(cached_celery, concurrent=False))
            in_s, celery_s = min(overhead_in), min(overhead_celery)
            per_step = (celery_s - in_s) / (runs * STEPS_PER_RUN)
            rows.append({"measure": "cached runs, one after the other: in-process", "seconds": in_s,
                         "per_step_s": in_s / (runs * STEPS_PER_RUN)})
            rows.append({"measure": "cached runs, one after the other: Celery (1+1 workers)", "seconds": celery_s,
                         "per_step_s": celery_s / (runs * STEPS_PER_RUN)})

            one_worker = run_all(settings("fresh1", "celery"), concurrent=True)
            workers += [_start_worker("default", "default2@bench", env, work / "default2.log"),
                        _start_worker("gpu", "gpu2@bench", env, work / "gpu2.log")]
            run_all(settings("warm2", "celery"), concurrent=True)  # warm-up of the new workers
            two_workers = run_all(settings("fresh2", "celery"), concurrent=True)
        rows.append({"measure": f"fresh store, {runs} runs in-process, one after the other",
                     "seconds": first_in_process, "images_per_s": images / first_in_process})
        rows.append({"measure": f"fresh store, {runs} runs at once: 1 worker per queue", "seconds": one_worker,
                     "images_per_s": images / one_worker})
        rows.append({"measure": f"fresh store, {runs} runs at once: 2 workers per queue", "seconds": two_workers,
                     "images_per_s": images / two_workers})
        print_table(rows, [("measure", "measure", ""), ("seconds", "s", ",.1f"), ("per_step_s", "s/step", ",.2f"),
                           ("images_per_s", "images/s", ",.2f")])
        report = Report("cluster", args.quick, info, rows=rows, extra={"images": images, "shards": shards})
        report.targets.append(Target("Celery overhead per step (warm workers, cached steps)", per_step, 0, " s",
                                     note="measured; no target"))
        report.targets.append(Target("throughput, 2 vs 1 worker per queue", one_worker / two_workers, 0, "x",
                                     note="measured; no target"))
        report.write()
    finally:
        _stop(workers)
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
