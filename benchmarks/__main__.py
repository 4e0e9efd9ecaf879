"""Run charattr's benchmarks: `python -m benchmarks [--quick] [--only NAME ...] [--list]` (`make bench`).

Each benchmark runs in a fresh process (so its peak RSS and thread settings are its own, and one
that fails does not stop the others), prints its table and writes benchmarks/results/<name>.json;
this runner then prints every target of the issue with its measured value and writes
benchmarks/results/summary.json. Benchmarks measure; they never fail the build over a number:
the exit code is non-zero only when a benchmark could not run.

    tags     tag parser posts/s on one core vs a naive parser          (bench_tags.py)
    sources  read + validate images/s: folder vs WebDataset tar vs Parquet (bench_sources.py)
    cache    second run over the same images vs the first, and its breakdown (bench_cache.py)
    clip     CLIP stage vs the bare model vs a naive loop, tuning sweeps (bench_clip.py)
    runtimes CPU runtimes and precisions vs eager fp32, and the auto path's stage (bench_runtimes.py)
    memory   peak RSS of tags-only runs (10k vs 100k images) and of a CLIP run (bench_memory.py)
    scale    1M posts over 100 partitions through `charattr run` (Dagster) (bench_scale.py)

A full run takes well over an hour on a 2-core laptop (scale alone most of it, with ~14 GB of
temporary disk); `--quick` takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any, Sequence

from .common import RESULTS_DIR, ROOT, describe_machine, machine_info

# name -> (module, arguments in quick mode, arguments in full mode)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "tags": ("benchmarks.bench_tags", ["--posts", "20000", "--baseline-posts", "500", "--repeats", "2"], []),
    "sources": ("benchmarks.bench_sources", ["--quick"], []),
    "cache": ("benchmarks.bench_cache", ["--quick"], []),
    "clip": ("benchmarks.bench_clip", ["--quick"], []),
    "runtimes": ("benchmarks.bench_runtimes", ["--quick"], []),
    "memory": ("benchmarks.bench_memory", ["--quick"], []),
    "scale": ("benchmarks.bench_scale", ["--quick"], []),
}


def targets_of(name: str) -> list[dict[str, Any]]:
    """The targets a benchmark's result file reports (bench_tags has its own format)."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if name == "tags":
        parse = next((r for r in data.get("results", []) if r.get("name", "").startswith("parse()")), {})
        return [{"name": "tag parser posts/s on one core (~30-tag posts)", "value": parse.get("posts_per_s"),
                 "target": data.get("target_posts_per_s"), "unit": "", "at_most": False,
                 "met": data.get("parse_meets_target")}]
    return data.get("targets", [])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(line for line in __doc__.splitlines()  # the list above
                                                   if line.startswith("    ") and line.split()[0] in BENCHMARKS))
    ap.add_argument("--quick", action="store_true", help="short versions (minutes, not hours)")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help=f"run only these (repeat or comma-separate): {', '.join(BENCHMARKS)}")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, (module, _q, _f) in BENCHMARKS.items():
            print(f"{name:8s} python -m {module}")
        return 0
    names = [n.strip() for item in (args.only or []) for n in item.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    info = machine_info()
    print(f"charattr benchmarks ({'quick' if args.quick else 'full'}): {', '.join(names)}")
    print(f"machine: {describe_machine(info)}\n", flush=True)
    ran: dict[str, dict[str, Any]] = {}
    for name in names:
        module, quick_args, full_args = BENCHMARKS[name]
        cmd = [sys.executable, "-m", module, *(quick_args if args.quick else full_args)]
        print(f"--- {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(cmd, cwd=ROOT)
        ran[name] = {"exit_code": code, "seconds": round(time.perf_counter() - started, 1)}
        print(f"--- {name}: {'done' if code == 0 else f'FAILED (exit code {code})'} in "
              f"{ran[name]['seconds']:.0f} s\n", flush=True)

    print("== targets ==")
    summary = {"quick": args.quick, "machine": info, "benchmarks": ran, "targets": {}}
    for name in names:
        targets = targets_of(name) if ran[name]["exit_code"] == 0 else []
        summary["targets"][name] = targets
        for t in targets:
            op = "<=" if t.get("at_most") else ">="
            value = t.get("value")
            shown = f"{value:,.2f}" if isinstance(value, (int, float)) else str(value)
            verdict = "met" if t.get("met") else "NOT met"
            print(f"  {name:8s} {t['name']}: {shown}{t.get('unit', '')} (target {op} {t.get('target')}"
                  f"{t.get('unit', '')}): {verdict}")
        if ran[name]["exit_code"] != 0:
            print(f"  {name:8s} did not run to the end (exit code {ran[name]['exit_code']})")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {(RESULTS_DIR / 'summary.json').relative_to(ROOT)}")
    return 0 if all(r["exit_code"] == 0 for r in ran.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
