"""Peak memory of whole pipeline runs: it must not grow with the number of images.

    .venv/bin/python -m benchmarks.bench_memory [--quick]

Each run is a fresh process (`--child`), so its peak RSS is its own: `create_pipeline(...)
.iter_results(source)` consumed to the end, the results store in a temporary SQLite file.

- tags only (`use_clip=False`) over 10,000 and over 100,000 posts (Parquet, 8x8 PNGs, ~30-tag
  Danbooru-like strings): the two peaks must differ by less than 20 %;
- CLIP with ViT-B-32 (random weights) over 256x256 synthetic images: under 2 GB peak.

`--quick`: 2,000 vs 20,000 posts and 32 CLIP images. The child also samples its RSS every tenth of
the way, so growth shows even when the peak comes from start-up. Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .common import (DATA_DIR, Report, Target, header, machine_info, print_table, run_child, write_demo_folder,
                     write_parquet_shards)

GROWTH_LIMIT = 0.20
CLIP_LIMIT_MIB = 2048


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: fall back to the peak
        from .common import peak_rss_mib
        return peak_rss_mib()


def child(args: argparse.Namespace) -> None:
    """One run in this (fresh) process; prints one JSON line."""
    from charattr_core.pipeline import RunSummary, create_pipeline

    from .common import peak_rss_mib

    start_rss = current_rss_mib()
    with tempfile.TemporaryDirectory(prefix="charattr-bench-mem-") as tmp:
        config: dict[str, Any] = {"database_url": f"sqlite:///{tmp}/charattr.db", "use_clip": args.clip}
        if args.clip:
            config.update(model_name=args.model, pretrained=None, device="cpu", batch_size=32, num_workers=1)
        summary = RunSummary()
        samples = []
        started = time.perf_counter()
        with create_pipeline(config) as pipe:
            step = max(1, args.images // 10)
            n = 0
            for _record, _fused in pipe.iter_results(args.source, summary=summary):
                n += 1
                if n % step == 0:
                    samples.append(round(current_rss_mib(), 1))
        seconds = time.perf_counter() - started
    print(json.dumps({"images": summary.images, "failed": summary.failed, "seconds": round(seconds, 2),
                      "images_per_s": round(summary.images / seconds, 1), "peak_rss_mib": peak_rss_mib(),
                      "start_rss_mib": round(start_rss, 1), "rss_samples_mib": samples,
                      "torch_imported": "torch" in sys.modules}))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--images", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--clip", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="ViT-B-32", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0

    info = machine_info(with_torch=False)
    header("memory: peak RSS of whole runs, each in a fresh process", info)
    small, large = (2_000, 20_000) if args.quick else (10_000, 100_000)
    per_shard = small  # the small run is one shard (one Parquet file), the large one ten
    data = write_parquet_shards(DATA_DIR / f"posts_8px_10x{per_shard}", 10, per_shard)
    clip_images = 32 if args.quick else 256
    clip_folder = write_demo_folder(DATA_DIR / f"memory_clip_{clip_images}x256", images=clip_images, shards=2)

    runs = [("tags only", small, str(sorted(data.glob("*.parquet"))[0]), False),
            ("tags only", large, str(data), False),
            ("CLIP ViT-B-32", clip_images, str(clip_folder), True)]
    rows = []
    for label, n, source, clip in runs:
        cmd = ["benchmarks.bench_memory", "--child", "--source", source, "--images", str(n)]
        result = run_child(cmd + (["--clip"] if clip else []))
        row = {"run": label, "images": result["images"], "seconds": result["seconds"],
               "images_per_s": result["images_per_s"], "peak_rss_mib": result["peak_rss_mib"],
               "rss_first_tenth_mib": (result["rss_samples_mib"] or [None])[0],
               "rss_last_tenth_mib": (result["rss_samples_mib"] or [None])[-1],
               "torch_imported": result["torch_imported"], "rss_samples_mib": result["rss_samples_mib"]}
        rows.append(row)
        print(f"  {label}, {n:,} images: peak {row['peak_rss_mib']:,.0f} MiB ({row['images_per_s']:,.0f} images/s)")
    print_table(rows, [("run", "run", ""), ("images", "images", ",d"), ("images_per_s", "images/s", ",.0f"),
                       ("peak_rss_mib", "peak MiB", ",.0f"), ("rss_first_tenth_mib", "RSS @10%", ",.0f"),
                       ("rss_last_tenth_mib", "RSS @100%", ",.0f"), ("torch_imported", "torch", "")])
    report = Report("memory", args.quick, info, rows=rows)
    growth = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] - 1
    report.targets.append(Target(f"tags-only peak RSS growth, {small:,} -> {large:,} images", growth * 100,
                                 GROWTH_LIMIT * 100, "%", at_most=True))
    report.targets.append(Target("CLIP ViT-B-32 run peak RSS", rows[2]["peak_rss_mib"], CLIP_LIMIT_MIB, " MiB",
                                 at_most=True))
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
