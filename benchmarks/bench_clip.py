"""Throughput of the `clip_embeddings` stage against the bare model and against a naive loop.

    .venv/bin/python -m benchmarks.bench_clip [--quick] [--images 192] [--batch-size 32] [--device cpu]

Workload: 256x256 synthetic PNGs (charattr_core.synthetic) in a folder, ViT-B-32 with random
weights (`load_clip("ViT-B-32", None)`: the same cost as trained weights). Measured in the same
process, in interleaved rounds (the median round is reported, and the targets use the median of
the ratios taken within each round, so load elsewhere on the machine hits every path alike):

- bare: `model.encode_tensor` on one pre-made, preprocessed batch, repeated: the ceiling.
- stage: `embed_images` from image uris to embeddings (read bytes, decode, resize, batch, encode),
  with decoding in worker threads overlapping inference.
- stage + store: the same, each batch's embeddings written to SQLite in one transaction (what the
  pipeline does).
- naive: the seed's way, one image at a time: open the file, preprocess, encode a batch of one,
  write the row to SQLite in its own transaction.

Full mode also sweeps batch size and torch threads x decode workers. On a CUDA machine the same
table is measured on the GPU too (fp16, larger batches). Writes benchmarks/results/clip.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from .common import (DATA_DIR, Report, Target, header, machine_info, median, print_table, timed, usable_cores,
                     write_demo_folder)

MODEL = "ViT-B-32"
STAGE_TARGET = 0.8  # stage >= 80 % of the bare model at the same batch size
NAIVE_TARGET = 4.0  # stage + store >= 4x the naive loop


def _setup(images: int):
    from charattr_core.records import ImageRecord
    from charattr_core.sources import open_source

    folder = write_demo_folder(DATA_DIR / f"clip_{images}x256", images=images, shards=1, size=256)
    source = open_source(folder)
    uris = [item.uri for shard in source.shards() for item in source.read(shard)][:images]
    records = [ImageRecord(image_id=f"img{i:06d}", source_uri=uri, shard="bench") for i, uri in enumerate(uris)]
    return source, records


class Paths:
    """The four measured paths over one model, one source and one store."""

    def __init__(self, model, source, records, store_dir: Path) -> None:
        import torch

        from charattr_core.clip import decode_image, clip_stage_version
        from charattr_core.store import ResultStore

        self.model, self.source, self.records = model, source, records
        self.store = ResultStore(f"sqlite:///{store_dir / 'clip.db'}")
        self.version = clip_stage_version(model.model_key)
        self._decode = decode_image
        self._torch = torch
        self._template = torch.stack([model.preprocess(decode_image(source.load_bytes(r.source_uri)))
                                      for r in records[:64]])

    def bare_batch(self, batch_size: int):
        reps = -(-batch_size // len(self._template))
        batch = self._torch.cat([self._template] * reps)[:batch_size].contiguous()
        return batch.to(self.model.device)  # on a GPU: already there, the pure forward pass

    def bare(self, n: int, batch_size: int) -> int:
        batch = self.bare_batch(batch_size)
        done = 0
        while done < n:
            self.model.encode_tensor(batch)
            done += batch_size
        return done

    def stage(self, n: int, batch_size: int, workers: int) -> int:
        from charattr_core.clip import embed_images

        return sum(1 for e in embed_images(self._take(n), self.model, lambda r: self.source.load_bytes(r.source_uri),
                                           batch_size=batch_size, num_workers=workers) if e.embedding is not None)

    def stage_and_store(self, n: int, batch_size: int, workers: int) -> int:
        from charattr_core.batching import batched
        from charattr_core.clip import embed_images
        from charattr_core.stages import EMBEDDING_CODEC

        done = 0
        rows = embed_images(self._take(n), self.model, lambda r: self.source.load_bytes(r.source_uri),
                            batch_size=batch_size, num_workers=workers)
        for chunk in batched(rows, batch_size):
            self.store.put_many("bench_clip", self.version,
                                [(e.image_id, *EMBEDDING_CODEC.encode(e)) for e in chunk if e.embedding is not None])
            done += len(chunk)
        return done

    def naive(self, n: int) -> int:
        from PIL import Image

        from charattr_core.stages import EMBEDDING_CODEC
        from charattr_core.records import ClipEmbedding

        for record in self._take(n):
            with open(record.source_uri, "rb") as f, Image.open(f) as image:
                x = self.model.preprocess(image.convert("RGB")).unsqueeze(0)
            vector = self.model.encode_tensor(x)[0].astype("float16")
            row = ClipEmbedding(record.image_id, self.model.model_key, vector)
            self.store.put_many("bench_naive", self.version, [(record.image_id, *EMBEDDING_CODEC.encode(row))])
        return n

    def _take(self, n: int):
        return [self.records[i % len(self.records)] for i in range(n)]


def measure(paths: Paths, *, images: int, naive_images: int, batch_size: int, workers: int, rounds: int,
            label: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Interleaved rounds of the four paths; rows with the median images/s of each."""
    runs: dict[str, list[float]] = {"bare": [], "stage": [], "stage + store": [], "naive": []}
    paths.bare(batch_size, batch_size)  # warm-up: first-call allocations and kernel selection
    paths.naive(2)
    for _ in range(rounds):
        runs["bare"].append(timed(lambda: paths.bare(images, batch_size)).per_s)
        runs["stage"].append(timed(lambda: paths.stage(images, batch_size, workers)).per_s)
        runs["stage + store"].append(timed(lambda: paths.stage_and_store(images, batch_size, workers)).per_s)
        runs["naive"].append(timed(lambda: paths.naive(naive_images)).per_s)
    rate = {name: median(values) for name, values in runs.items()}
    # Ratios are taken within each round (its paths ran minutes apart, not tens of minutes), then
    # the median round: load from elsewhere on a shared machine drifts between rounds.
    rate["stage / bare"] = median([s / b for s, b in zip(runs["stage"], runs["bare"])])
    rate["stage + store / naive"] = median([s / n for s, n in zip(runs["stage + store"], runs["naive"])])
    notes = {"bare": f"encode_tensor on a pre-made batch of {batch_size}",
             "stage": f"embed_images, batch {batch_size}, {workers} decode workers",
             "stage + store": "the stage + one SQLite transaction per batch",
             "naive": "open, preprocess, encode 1 image, 1 transaction per image"}
    rows = [{"device": label, "path": name, "batch": 1 if name == "naive" else batch_size,
             "images": naive_images if name == "naive" else images, "rounds": rounds,
             "images_per_s": round(rate[name], 3), "all_rounds": [round(v, 3) for v in runs[name]],
             "x_bare": round(rate[name] / rate["bare"], 3), "x_naive": round(rate[name] / rate["naive"], 2),
             "note": notes[name]} for name in runs]
    print(f"per-round ratios (median): stage / bare {rate['stage / bare']:.2f}, "
          f"stage + store / naive {rate['stage + store / naive']:.2f}")
    return rows, rate


def sweep(paths: Paths, *, images: int, batch_sizes: Sequence[int], thread_settings: Sequence[tuple[int, int]],
          batch_size: int) -> list[dict[str, Any]]:
    """Stage vs bare over batch sizes, then stage throughput over (torch threads, decode workers)."""
    import torch

    rows = []
    default_threads = torch.get_num_threads()
    for bs in batch_sizes:
        paths.bare(bs, bs)
        bare = timed(lambda: paths.bare(images, bs)).per_s
        stage = timed(lambda: paths.stage(images, bs, 1)).per_s
        rows.append({"sweep": "batch size", "setting": f"batch {bs}", "bare_per_s": round(bare, 3),
                     "stage_per_s": round(stage, 3), "stage_x_bare": round(stage / bare, 3)})
    for threads, workers in thread_settings:
        torch.set_num_threads(threads)
        try:
            paths.bare(batch_size, batch_size)
            bare = timed(lambda: paths.bare(images, batch_size)).per_s
            stage = timed(lambda: paths.stage(images, batch_size, workers)).per_s
        finally:
            torch.set_num_threads(default_threads)
        rows.append({"sweep": "threads", "setting": f"torch {threads} / workers {workers}",
                     "bare_per_s": round(bare, 3), "stage_per_s": round(stage, 3),
                     "stage_x_bare": round(stage / bare, 3)})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few images, one round, no sweeps")
    ap.add_argument("--images", type=int, help="images per measured path (default 192, quick 64)")
    ap.add_argument("--naive-images", type=int, help="images of the naive loop (default 48, quick 16)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="decode workers of the stage (default 1: see RESULTS.md)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto; CUDA is measured too when present")
    args = ap.parse_args(argv)
    images = args.images or (64 if args.quick else 192)
    naive_images = args.naive_images or (16 if args.quick else 48)
    rounds = args.rounds or (1 if args.quick else 3)

    import torch

    from charattr_core.clip import load_clip

    info = machine_info()
    header(f"CLIP stage: {MODEL}, random weights, 256x256 PNGs", info)
    source, records = _setup(max(images, 64))
    report = Report("clip", args.quick, info, extra={"model": f"{MODEL}/random", "image_size": 256,
                                                     "workers": args.workers})
    devices: list[tuple[str, str, int, int]] = [(args.device, "auto", args.batch_size, images)]
    if torch.cuda.is_available() and args.device != "cuda":
        devices.append(("cuda", "fp16", 256, max(images, 2048 if not args.quick else 512)))

    with tempfile.TemporaryDirectory(prefix="charattr-bench-clip-") as tmp:
        for device, precision, batch_size, n in devices:
            model = load_clip(MODEL, None, device=device, precision=precision)
            label = f"{model.device.type}/{model.inference_path}"
            paths = Paths(model, source, records, Path(tmp))
            rows, rate = measure(paths, images=n, naive_images=naive_images, batch_size=batch_size,
                                 workers=args.workers if model.device.type == "cpu" else max(4, usable_cores() - 1),
                                 rounds=rounds,
                                 label=label)
            report.rows.extend(rows)
            print_table(rows, [("device", "device", ""), ("path", "path", ""), ("batch", "batch", "d"),
                               ("images", "images", "d"), ("images_per_s", "images/s", ",.2f"),
                               ("x_bare", "x bare", ".2f"), ("x_naive", "x naive", ".1f"), ("note", "note", "")])
            report.targets.append(Target(f"{label} stage / bare model at batch {batch_size}", rate["stage / bare"],
                                         STAGE_TARGET, note="median of per-round ratios"))
            report.targets.append(Target(f"{label} stage + store / naive loop", rate["stage + store / naive"],
                                         NAIVE_TARGET, note="median of per-round ratios"))
            if not args.quick and model.device.type == "cpu":
                sweep_rows = sweep(paths, images=max(64, n // 3), batch_sizes=(8, 16, 32, 64),
                                   thread_settings=((2, 0), (2, 1), (2, 2), (1, 1)), batch_size=batch_size)
                report.extra["sweep"] = sweep_rows
                print()
                print_table(sweep_rows, [("sweep", "sweep", ""), ("setting", "setting", ""),
                                         ("bare_per_s", "bare/s", ",.2f"), ("stage_per_s", "stage/s", ",.2f"),
                                         ("stage_x_bare", "x bare", ".2f")])
            paths.store.close()
            del model, paths
    if not torch.cuda.is_available():
        report.extra["gpu"] = "not measured: no CUDA device on this machine"
        print("GPU path: not measured (no CUDA device on this machine)")
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
