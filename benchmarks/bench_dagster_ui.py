"""Latency as a Dagster UI user sees it, under `dagster dev` (webserver + daemon):

- "Materialize all" on a graph whose every image is cached: from the GraphQL mutation the UI
  sends (`launchPartitionBackfill`, every asset, every partition) to the backfill's COMPLETED,
  and to the end of its last run;
- a new shard landing with the shard sensor on: from copying the folder into the source to its
  `fused_attributes` partition (the product rows), and to `attribute_report` re-materialized by
  the automation sensor.

Each is set against the step work in the same runs (the sum of the steps' own durations), so the
ratio says how much of the wait is orchestration. Two instance configurations:

- `before`: what main had (dagster.yaml with only the gpu pool and telemetry; 25 shards per run;
  the run queue's 5 s dequeue interval; sensor and backfill daemons without threads);
- `after`: `charattr_dagster.instance` (1 s dequeue, threaded daemons, run monitoring) and one
  shard per run.

    .venv/bin/python -m benchmarks.bench_dagster_ui [--config before|after|both] [--shards 4] [--images 40]

Uses the tiny CLIP architecture (random weights): the point is orchestration, not the model.
Writes benchmarks/results/dagster_ui.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from .common import RESULTS_DIR, ROOT, header, machine_info, print_table

BEFORE_YAML = """\
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""
ASSETS = ["raw_images", "tag_parses", "clip_embeddings", "attribute_probes", "fusion_policy", "fused_attributes",
          "attribute_report"]
LAUNCH_BACKFILL = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } } }"""
START_SENSOR = """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename
  ... on PythonError { message } } }"""
LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    if "errors" in payload:
        raise RuntimeError(payload["errors"])
    return payload["data"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (urllib.error.URLError, ConnectionError):
            value = None
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_seconds(instance, run_ids) -> float:
    """The steps' own durations summed over runs: the work, without queueing and process starts."""
    total = 0.0
    for run_id in run_ids:
        for step in instance.get_run_step_stats(run_id):
            if step.start_time and step.end_time:
                total += step.end_time - step.start_time
    return total


def run_span(instance, run_ids) -> tuple[float, float]:
    """(first run's creation, last run's end) as unix times."""
    records = instance.get_run_records(filters=__import__("dagster").RunsFilter(run_ids=list(run_ids)))
    return (min(r.create_timestamp.timestamp() for r in records),
            max((r.end_time or time.time()) for r in records))


def latest_timestamp(instance, asset: str, partition: str | None = None) -> float | None:
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1).records
    return records[0].timestamp if records else None


def measure(config: str, shards: int, images: int, work: Path) -> dict[str, Any]:
    import dagster as dg

    from charattr_core.synthetic import write_demo_dataset
    from charattr_dagster.instance import write_instance_settings

    source, extra, home, data = work / "source", work / "extra", work / "home", work / "data"
    write_demo_dataset(source, n_images=images, n_shards=shards, size=64, seed=0)
    write_demo_dataset(extra, n_images=images // shards, n_shards=1, size=64, seed=1)  # a new shard's images
    home.mkdir(parents=True)
    if config == "before":
        (home / "dagster.yaml").write_text(BEFORE_YAML)
    else:
        write_instance_settings(home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "CHARATTR_SOURCE": str(source), "CHARATTR_DATA_DIR": str(data),
           "CHARATTR_MODEL": "charattr-tiny", "CHARATTR_PRETRAINED": "random", "CHARATTR_DEVICE": "cpu",
           "CHARATTR_SHARDS_PER_RUN": "25" if config == "before" else "1", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charattr_core.cli", "run", str(source)], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    warm_s = time.perf_counter() - started  # fills the cache and registers the shards

    port = free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    log = (work / "dagster_dev.log").open("w")
    # `python -m dagster`: this interpreter's charattr, whatever `dagster` is on PATH.
    server = subprocess.Popen(["bash", "-c", f"trap - INT TERM; exec {sys.executable} -m dagster dev -w workspace.yaml "
                                             f"-h 127.0.0.1 -p {port}"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    result: dict[str, Any] = {"config": config, "shards": shards, "images": images, "warm_run_s": round(warm_s, 1)}
    try:
        wait_for(lambda: any(e["loadStatus"] == "LOADED" for e in
                             graphql(url, LOCATION)["workspaceOrError"]["locationEntries"]), 240, "the code location")
        repo = {"repositoryLocationName": "charattr", "repositoryName": "__repository__"}
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # "Materialize all" on the cached graph.
            t0 = time.time()
            launched = graphql(url, LAUNCH_BACKFILL, {"p": {"assetSelection": [{"path": [a]} for a in ASSETS],
                                                          "allPartitions": True}})["launchPartitionBackfill"]
            if launched["__typename"] != "LaunchBackfillSuccess":
                raise RuntimeError(launched)
            backfill = launched["backfillId"]
            status = wait_for(lambda: (s := graphql(url, BACKFILL_STATUS, {"id": backfill})["partitionBackfillOrError"]
                                       .get("status")) in ("COMPLETED", "COMPLETED_SUCCESS", "FAILED", "CANCELED",
                                                           "COMPLETED_FAILED") and s, 900, "the backfill")
            t_done = time.time()
            runs = [r.run_id for r in instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill}))]
            wait_for(lambda: all(r.is_finished for r in instance.get_runs(dg.RunsFilter(run_ids=runs))), 300, "runs")
            first, last = run_span(instance, runs)
            work_s = step_seconds(instance, runs)
            result["materialize_all"] = {
                "status": status, "runs": len(runs), "to_backfill_completed_s": round(t_done - t0, 1),
                "to_last_run_end_s": round(last - t0, 1), "first_run_created_after_s": round(first - t0, 1),
                "step_work_s": round(work_s, 2), "ratio_completed_to_work": round((t_done - t0) / work_s, 1),
                "ratio_last_run_to_work": round((last - t0) / work_s, 1)}

            # A new shard lands with the sensor on.
            report_before = latest_timestamp(instance, "attribute_report")
            started_sensor = graphql(url, START_SENSOR, {"s": {**repo, "sensorName": "shard_sensor"}})["startSensor"]
            if started_sensor["__typename"] == "PythonError":
                raise RuntimeError(started_sensor)
            time.sleep(2)
            t0 = time.time()
            shutil.copytree(extra / "shard_000", source / "shard_zz_new")
            fused_at = wait_for(lambda: latest_timestamp(instance, "fused_attributes", "shard_zz_new"), 600,
                                "the new shard's product rows", poll=0.5)
            runs = [r.run_id for r in instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "shard_zz_new"}))]
            work_s = step_seconds(instance, runs)
            report_at = wait_for(lambda: (t := latest_timestamp(instance, "attribute_report")) and t != report_before
                                 and t, 600, "the report re-materialized by automation", poll=0.5)
            result["new_shard"] = {
                "to_product_rows_s": round(fused_at - t0, 1), "to_report_s": round(report_at - t0, 1),
                "step_work_s": round(work_s, 2), "ratio_product_to_work": round((fused_at - t0) / work_s, 1)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=["before", "after", "both"], default="both")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="the default sizes (kept for `python -m benchmarks`)")
    args = ap.parse_args(argv)
    info = machine_info(with_torch=False)
    header("Dagster UI latency (dagster dev)", info)
    configs = ["before", "after"] if args.config == "both" else [args.config]
    results = []
    for config in configs:
        # The daemon may still be writing run logs while it stops: cleanup errors are not results.
        with tempfile.TemporaryDirectory(prefix=f"charattr-ui-{config}-", ignore_cleanup_errors=True) as tmp:
            results.append(measure(config, args.shards, args.images, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print_table([{"config": r["config"], **{f"all_{k}": v for k, v in r["materialize_all"].items()},
                  **{f"new_{k}": v for k, v in r["new_shard"].items()}} for r in results],
                [("config", "config", "s"), ("all_runs", "runs", "d"),
                 ("all_to_backfill_completed_s", "all: done s", ".1f"),
                 ("all_to_last_run_end_s", "all: last run s", ".1f"), ("all_step_work_s", "all: work s", ".1f"),
                 ("new_to_product_rows_s", "new shard: rows s", ".1f"), ("new_to_report_s", "report s", ".1f"),
                 ("new_step_work_s", "new: work s", ".1f")])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "dagster_ui.json"
    out.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
