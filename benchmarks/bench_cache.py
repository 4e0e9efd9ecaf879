"""A re-run over images already processed: how much faster the results cache makes it, and where
the remaining time goes.

    .venv/bin/python -m benchmarks.bench_cache [--quick] [--images 1000] [--model ViT-B-32]

Workload: synthetic 256x256 characters with sidecar tags in a folder (4 shards), CLIP enabled
(ViT-B-32 with random weights; `--quick`: 200 images and the tiny test architecture), SQLite
results store in a temporary folder. Each run is `create_pipeline(config).iter_results(folder)`
consumed to the end, in this process:

- first run: an empty store: everything is validated, parsed, embedded, fused and stored;
- second run: a fresh pipeline over the same store: every fused result is found by content hash
  (one query per batch of 256), so nothing is decoded or encoded, and the model is not loaded;
- the second run's breakdown, each part timed on its own over the same images: reading the bytes
  (and sidecar tags), hashing them, the batched lookups (SQL only), decoding the JSON payloads,
  building `FusedAttributes`; the rest is the pipeline's own bookkeeping.

Writes benchmarks/results/cache.json.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .common import DATA_DIR, Report, Target, header, machine_info, print_table, timed, write_demo_folder

SPEEDUP_TARGET = 200.0
LOOKUP_BATCH = 256  # = the pipeline's batch size in iter_results


def consume(pipe, folder: Path):
    from charattr_core.pipeline import RunSummary

    summary = RunSummary()
    for _ in pipe.iter_results(folder, summary=summary):
        pass
    return summary


def best_of(run, repeats: int = 3) -> float:
    return min(timed(run, 0).wall_s for _ in range(repeats))


def breakdown(folder: Path, db_path: Path, pipe, images: int) -> list[dict]:
    """The second run's parts, each timed alone (best of 3) over the same images."""
    from charattr_core.batching import batched
    from charattr_core.records import FusedAttributes
    from charattr_core.sources import open_source
    from charattr_core.sources.hashing import content_hash
    from charattr_core.records import tags_digest
    from charattr_core.stages import STAGE_FUSED, gc_paused, tags_key

    source = open_source(folder)
    items = [item for shard in source.shards() for item in source.read(shard)]
    datas = [item.data for item in items]
    ids = [content_hash(d) for d in datas]
    keys = [(i, tags_key(tags_digest(item.tags))) for i, item in zip(ids, items)]  # fused rows: image and tags
    version = pipe.fused_version()
    store = pipe.store

    def read() -> None:
        for shard in source.shards():
            for _item in source.read(shard):
                pass

    def hashing() -> None:
        for data in datas:
            content_hash(data)

    def lookup_store() -> None:  # what the pipeline calls: SQL + JSON decoding inside SQLAlchemy
        for chunk in batched(keys, LOOKUP_BATCH):
            store.get_many(STAGE_FUSED, version, chunk)

    connection = sqlite3.connect(db_path)
    sql = "SELECT image_id, payload FROM stage_results WHERE stage = ? AND stage_version = ? AND image_id IN ({})"
    raw_payloads = []

    def lookup_sql() -> None:  # the round trips alone: the payloads stay JSON text
        raw_payloads.clear()
        for chunk in batched(ids, LOOKUP_BATCH):
            query = sql.format(",".join("?" * len(chunk)))
            raw_payloads.extend(p for _i, p in connection.execute(query, (STAGE_FUSED, version, *chunk)))

    lookup_sql()
    decoded = [json.loads(p) for p in raw_payloads]

    def decode_json() -> None:
        for p in raw_payloads:
            json.loads(p)

    def build_objects() -> None:
        for d in decoded:
            FusedAttributes.from_record(d)

    parts = [("read bytes + tags", read), ("content hash", hashing), ("lookups: SQL round trips", lookup_sql),
             ("lookups: JSON decoding", decode_json), ("FusedAttributes objects", build_objects),
             ("store.get_many (SQL + JSON + rows)", lookup_store)]
    rows = []
    for name, run in parts:
        with gc_paused():  # as in run_cached, which decodes every cached batch with the collector paused
            seconds = best_of(run)
        rows.append({"part": name, "seconds": round(seconds, 4), "us_per_image": round(seconds / images * 1e6, 1)})
    connection.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 images and the tiny CLIP model")
    ap.add_argument("--images", type=int)
    ap.add_argument("--model", help="open_clip architecture with random weights (default ViT-B-32; quick: charattr-tiny)")
    args = ap.parse_args(argv)
    images = args.images or (200 if args.quick else 1000)
    model = args.model or ("charattr-tiny" if args.quick else "ViT-B-32")

    from charattr_core.pipeline import create_pipeline
    from charattr_core.stages import STAGE_FUSED

    info = machine_info()
    header(f"cache: second run over {images:,} images, CLIP {model} (random weights)", info)
    folder = write_demo_folder(DATA_DIR / f"cache_{images}x256", images=images, shards=4, size=256)
    report = Report("cache", args.quick, info, extra={"model": f"{model}/random", "images": images})
    with tempfile.TemporaryDirectory(prefix="charattr-bench-cache-") as tmp:
        db_path = Path(tmp) / "charattr.db"
        config = {"model_name": model, "pretrained": None, "device": "cpu", "database_url": f"sqlite:///{db_path}",
                  "batch_size": 32, "num_workers": 1}

        started = time.perf_counter()
        first_pipe = create_pipeline(config)
        load = timed(lambda: first_pipe.clip is not None and 1, 1)
        first_summary = None

        def first_run() -> int:
            nonlocal first_summary
            first_summary = consume(first_pipe, folder)
            return first_summary.images
        first = timed(first_run)
        first_total = time.perf_counter() - started

        second_pipe = None
        second_summary = None

        def second_run() -> int:
            nonlocal second_pipe, second_summary
            second_pipe = create_pipeline(config)
            second_summary = consume(second_pipe, folder)
            return second_summary.images
        second = timed(second_run)
        model_loaded = second_pipe._clip is not None
        warm = timed(lambda: consume(first_pipe, folder).images)  # the same pipeline object again

        fused_second = second_summary.stages[STAGE_FUSED]
        rows = [
            {"run": "first (empty store)", "images": first.items, "seconds": round(first_total, 3),
             "images_per_s": round(first.items / first_total, 2),
             "note": f"incl. create_pipeline and model load ({load.wall_s:.1f} s); fused computed "
                     f"{first_summary.stages[STAGE_FUSED].computed}"},
            {"run": "second (fresh pipeline)", "images": second.items, "seconds": round(second.wall_s, 4),
             "images_per_s": round(second.per_s, 1),
             "note": f"incl. create_pipeline; fused cached {fused_second.skipped}, computed {fused_second.computed}; "
                     f"model loaded: {model_loaded}"},
            {"run": "again (same pipeline)", "images": warm.items, "seconds": round(warm.wall_s, 4),
             "images_per_s": round(warm.per_s, 1), "note": "pipeline, store and model already open"},
        ]
        for row in rows:
            row["x_first"] = round(first_total / row["seconds"], 1)
        print_table(rows, [("run", "run", ""), ("images", "images", ",d"), ("seconds", "seconds", ",.3f"),
                           ("images_per_s", "images/s", ",.1f"), ("x_first", "x first", ",.1f"), ("note", "note", "")])
        report.rows = rows

        parts = breakdown(folder, db_path, second_pipe, images)
        for part in parts:
            part["share_of_second_run"] = round(part["seconds"] / second.wall_s, 3)
        print()
        print_table(parts, [("part", "second run, part", ""), ("seconds", "seconds", ".4f"),
                            ("us_per_image", "us/image", ",.1f"), ("share_of_second_run", "share", ".0%")])
        report.extra["second_run_breakdown"] = parts
        report.extra["first_run_processing_s"] = round(first.wall_s, 3)
        report.extra["model_load_s"] = round(load.wall_s, 3)
        report.targets.append(Target("second run speed-up over the first", first_total / second.wall_s,
                                     SPEEDUP_TARGET, "x", note=f"{model}, {images} images" + (
                                         "; quick mode: a tiny model makes a short first run, not the "
                                         "issue's workload" if args.quick else "")))
        report.targets.append(Target("second run: fused results computed again", fused_second.computed, 0,
                                     at_most=True))
        second_pipe.close()
        first_pipe.close()
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
