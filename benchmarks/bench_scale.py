"""A million posts through the Dagster layer: `charattr run` over 100 partitions, tags only.

    .venv/bin/python -m benchmarks.bench_scale [--quick] [--shards 100] [--per-shard 10000] [--keep]

Workload: `--shards` Parquet files of `--per-shard` rows each (8x8 PNGs, distinct per row, and
Danbooru-like ~30-tag strings), generated once into benchmarks/data/. The run is the real command,
`charattr run SOURCE`, in a fresh process with its own DAGSTER_HOME, warehouse and SQLite store in
a temporary folder, CLIP disabled. Reported:

- overall: posts/s over the command's wall time, which includes Dagster's own overhead (runs,
  event log, partitions) and everything after the per-shard stages (training, the report);
- per stage: posts/s from the `seconds` and `rows` that each materialization records in its
  metadata (summed over the runs), and how much of the wall time the stages account for;
- peak RSS of the command's process.

`--quick`: 10 shards x 1,000 posts. Writes benchmarks/results/scale.json. The full run takes about
an hour on 2 cores and needs ~14 GB of free disk while it runs (the SQLite store holds ~12.5 KB per
post); its folder under benchmarks/data/ is deleted at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from .common import DATA_DIR, ROOT, Report, Target, header, machine_info, print_table, write_parquet_shards

STAGES = ("raw_images", "tag_parses", "clip_embeddings", "fused_attributes")


def clip_off_env(tmp: Path) -> tuple[dict[str, str], str]:
    """Environment that runs the graph without CLIP, and how it does so.

    Uses the Dagster layer's own switch when its settings have one; otherwise points the weights
    at an empty Hugging Face cache with downloads off, so CLIP is reported unavailable and skipped.
    """
    from charattr_dagster import settings

    fields = set(settings.Settings.model_fields)
    if "use_clip" in fields:
        return {"CHARATTR_USE_CLIP": "0"}, "CHARATTR_USE_CLIP=0"
    empty = tmp / "empty_hf_cache"
    empty.mkdir()
    return ({"HF_HUB_CACHE": str(empty), "HF_HUB_OFFLINE": "1", "CHARATTR_ALLOW_DOWNLOAD": "0",
             "CHARATTR_PRETRAINED": "openai"},
            "no CLIP switch in charattr_dagster.settings: weights made unavailable (empty HF cache, downloads off)")


def charattr_command() -> list[str]:
    script = Path(sys.executable).with_name("charattr")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from charattr_core.cli import main; raise SystemExit(main())"]


def stage_metadata(home: Path) -> dict[str, dict[str, float]]:
    """Per stage: rows, seconds and counts summed over its runs (a range run records its totals on
    every partition it materializes, so each run is counted once)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    out: dict[str, dict[str, float]] = {}
    with dg.DagsterInstance.get() as instance:
        for stage in STAGES:
            by_run: dict[str, dict[str, Any]] = {}
            cursor = None
            while True:
                page = instance.fetch_materializations(dg.AssetKey(stage), limit=1000, cursor=cursor)
                for record in page.records:
                    mat = record.asset_materialization
                    if mat is not None and record.run_id not in by_run:
                        by_run[record.run_id] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
                if not page.has_more:
                    break
                cursor = page.cursor
            totals: dict[str, float] = defaultdict(float)
            for meta in by_run.values():
                for key in ("rows", "computed", "skipped", "failed", "seconds"):
                    value = meta.get(key)
                    if isinstance(value, (int, float)):
                        totals[key] += value
            totals["runs"] = len(by_run)
            out[stage] = dict(totals)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 shards x 1,000 posts")
    ap.add_argument("--shards", type=int)
    ap.add_argument("--per-shard", type=int)
    ap.add_argument("--shards-per-run", type=int, help="partitions per Dagster run (default: the layer's own)")
    ap.add_argument("--batch-size", type=int, default=256,
                    help="CHARATTR_STAGE_BATCH_SIZE: rows per cached batch and transaction (CLIP is off; default 256)")
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (warehouse, store, DAGSTER_HOME)")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds before the run is stopped")
    args = ap.parse_args(argv)
    shards = args.shards or (10 if args.quick else 100)
    per_shard = args.per_shard or (1_000 if args.quick else 10_000)
    posts = shards * per_shard

    info = machine_info(with_torch=False)
    header(f"scale: {posts:,} posts in {shards} partitions through `charattr run` (Dagster), tags only", info)
    source = write_parquet_shards(DATA_DIR / f"scale_{shards}x{per_shard}", shards, per_shard)
    tmp = Path(tempfile.mkdtemp(prefix="charattr-bench-scale-", dir=DATA_DIR))
    try:
        env_clip, how = clip_off_env(tmp)
        env = {**os.environ, **env_clip, "DAGSTER_HOME": str(tmp / "dagster_home"),
               "CHARATTR_DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1"}
        if args.batch_size:
            env["CHARATTR_STAGE_BATCH_SIZE"] = str(args.batch_size)
        if args.shards_per_run:
            env["CHARATTR_SHARDS_PER_RUN"] = str(args.shards_per_run)
        cmd = [*charattr_command(), "run", str(source)]
        print(f"$ {' '.join(cmd)}   (CLIP off: {how})")
        log_path = tmp / "run.log"
        started = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            try:
                code = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = -9
        wall = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        output = log_path.read_text()
        print("\n".join("  | " + line for line in output.strip().splitlines()[-25:]))
        if code != 0:
            print(f"charattr run exited with code {code} after {wall:.0f} s")

        stages = stage_metadata(tmp / "dagster_home")
        rows = [{"stage": "whole command (wall)", "posts": posts, "seconds": round(wall, 1),
                 "posts_per_s": round(posts / wall, 1), "runs": None, "share": 1.0}]
        for stage, totals in stages.items():
            seconds = totals.get("seconds", 0.0)
            rows.append({"stage": stage, "posts": int(totals.get("rows", 0)), "seconds": round(seconds, 1),
                         "posts_per_s": round(totals.get("rows", 0) / seconds, 1) if seconds else None,
                         "runs": int(totals.get("runs", 0)), "share": round(seconds / wall, 3),
                         "computed": int(totals.get("computed", 0)), "skipped": int(totals.get("skipped", 0)),
                         "failed": int(totals.get("failed", 0))})
        in_stages = sum(stages[s].get("seconds", 0.0) for s in STAGES)
        rows.append({"stage": "outside the per-shard stages", "posts": None, "seconds": round(wall - in_stages, 1),
                     "posts_per_s": None, "runs": None, "share": round((wall - in_stages) / wall, 3)})
        print_table(rows, [("stage", "stage", ""), ("posts", "posts", ",d"), ("runs", "runs", "d"),
                           ("seconds", "seconds", ",.1f"), ("posts_per_s", "posts/s", ",.0f"),
                           ("share", "share of wall", ".0%")])
        print(f"peak RSS of the command: {peak_mib:,.0f} MiB")
        report = Report("scale", args.quick, info, rows=rows,
                        extra={"posts": posts, "shards": shards, "per_shard": per_shard, "exit_code": code,
                               "batch_size": args.batch_size,
                               "clip_off": how, "command_peak_rss_mib": round(peak_mib, 1),
                               "log_tail": output.strip().splitlines()[-40:]})
        fused_rows = int(stages.get("fused_attributes", {}).get("rows", 0))
        report.targets.append(Target("posts fused by the Dagster run", fused_rows, posts, note=f"exit code {code}"))
        report.targets.append(Target("overall throughput incl. Dagster overhead", posts / wall, 0, " posts/s",
                                     note="reported, no target"))
        report.write()
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
