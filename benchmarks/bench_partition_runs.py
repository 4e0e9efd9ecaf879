"""The cost of one partition per run: the same cached shards materialized by `process_shards` as
one partition-range run, and as one run per shard, in process (what `charattr run` does; a run
launched from the UI adds its own process start on top, see bench_dagster_ui).

    .venv/bin/python -m benchmarks.bench_partition_runs [--shards 8] [--images 40]

Every image is in the results cache (a first range run fills it), so what is left is Dagster's
per-run and per-step work plus reading and writing the Parquet partitions. Writes
benchmarks/results/partition_runs.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

from .common import RESULTS_DIR, ROOT, header, machine_info, print_table


def step_seconds(instance, run_id: str) -> float:
    return sum(s.end_time - s.start_time for s in instance.get_run_step_stats(run_id) if s.start_time and s.end_time)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="the default sizes (kept for `python -m benchmarks`)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import dagster as dg

    from charattr_core.synthetic import write_demo_dataset
    from charattr_dagster.definitions import build_definitions
    from charattr_dagster.partitions import SHARDS, range_tags
    from charattr_dagster.settings import Settings

    info = machine_info(with_torch=False)
    header("one partition per run vs a range run (cached shards, in process)", info)
    with tempfile.TemporaryDirectory(prefix="charattr-partition-runs-") as tmp:
        root = Path(tmp)
        write_demo_dataset(root / "source", n_images=args.images, n_shards=args.shards, size=64, seed=0)
        settings = Settings(source=str(root / "source"), model_name="charattr-tiny", pretrained=None,
                            database_url=f"sqlite:///{root / 'charattr.db'}", warehouse=str(root / "warehouse"),
                            reports=str(root / "reports"), device="cpu", clip_batch_size=32)
        job = build_definitions(settings).resolve_job_def("process_shards")
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        with dg.instance_for_test() as instance:
            keys = sorted(p.name for p in (root / "source").iterdir() if p.is_dir())
            instance.add_dynamic_partitions(SHARDS, keys)
            job.execute_in_process(instance=instance, tags=range_tags(keys), run_config=quiet)  # fills the cache
            started = time.perf_counter()
            ranged = job.execute_in_process(instance=instance, tags=range_tags(keys), run_config=quiet)
            range_s = time.perf_counter() - started
            range_work = step_seconds(instance, ranged.run_id)
            started = time.perf_counter()
            singles = [job.execute_in_process(instance=instance, partition_key=k, run_config=quiet) for k in keys]
            single_s = time.perf_counter() - started
            single_work = sum(step_seconds(instance, r.run_id) for r in singles)
    rows = [{"mode": f"1 range run over {len(keys)} shards", "runs": 1, "wall_s": range_s, "step_s": range_work},
            {"mode": f"{len(keys)} one-shard runs", "runs": len(keys), "wall_s": single_s, "step_s": single_work}]
    print_table(rows, [("mode", "mode", "s"), ("runs", "runs", "d"), ("wall_s", "wall s", ".2f"),
                       ("step_s", "step work s", ".2f")])
    per_run = (single_s - range_s) / (len(keys) - 1)
    print(f"extra cost of a run per shard: {per_run:.2f} s per shard (in process)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "partition_runs.json"
    out.write_text(json.dumps({"machine": info, "rows": rows, "extra_s_per_shard_run": round(per_run, 3)},
                              indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
