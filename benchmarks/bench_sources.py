"""Reading and validating the same images from a folder, a WebDataset tar shard and a Parquet file.

    .venv/bin/python -m benchmarks.bench_sources [--quick] [--images 2000]

Workload: synthetic 128x128 characters (PNG, with tags) written once as a folder with sidecar
`.txt` files, then copied into one WebDataset `.tar` (`<key>.png` + `<key>.txt`) and one Parquet
file. For each source, the best of 5 interleaved rounds, in this process:

- read: `source.read(shard)` only (bytes and tags, no decoding);
- read + validate: `read_images(source, shard)` (the `raw_images` stage: content hash and a full
  decode of every image);
- read + validate, 2 threads: the same with `workers=2`.

Writes benchmarks/results/sources.json.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path
from typing import Sequence

from .common import DATA_DIR, Report, Target, Timing, header, machine_info, print_table, timed, write_demo_folder

SIZE = 128


def build_copies(folder: Path) -> tuple[Path, Path]:
    """The folder's images as one tar shard and one Parquet file (made once, next to the folder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from charattr_core.sources import open_source

    tar_path = folder.parent / f"{folder.name}.tar"
    parquet_path = folder.parent / f"{folder.name}.parquet"
    if tar_path.is_file() and parquet_path.is_file():
        return tar_path, parquet_path
    source = open_source(folder)
    items = [item for shard in source.shards() for item in source.read(shard)]
    tmp = tar_path.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w") as tar:
        for index, item in enumerate(items):
            for name, data in ((f"{index:06d}.png", item.data), (f"{index:06d}.txt", (item.tags or "").encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    tmp.replace(tar_path)
    table = pa.table({"image": [item.data for item in items], "tags": [item.tags for item in items]})
    pq.write_table(table, parquet_path, row_group_size=256)
    return tar_path, parquet_path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is reported")
    args = ap.parse_args(argv)
    images = args.images or (400 if args.quick else 2000)

    from charattr_core.sources import open_source, read_images

    info = machine_info(with_torch=False)
    header(f"sources: {images:,} synthetic {SIZE}x{SIZE} PNGs with tags, read and validated", info)
    folder = write_demo_folder(DATA_DIR / f"sources_{images}x{SIZE}", images=images, shards=1, size=SIZE)
    tar_path, parquet_path = build_copies(folder)
    total_mb = sum(p.stat().st_size for p in folder.rglob("*.png")) / 1e6

    def paths_of(source):
        shards = source.shards()

        def read() -> int:
            return sum(1 for shard in shards for _ in source.read(shard))

        def validate(workers: int = 0) -> int:
            return sum(r.ok for shard in shards for r in read_images(source, shard, workers=workers))

        return (("read", read), ("read + validate", validate), ("read + validate, 2 threads", lambda: validate(2)))

    sources = {kind: open_source(path) for kind, path in
               (("folder", folder), ("webdataset tar", tar_path), ("parquet", parquet_path))}
    best: dict[tuple[str, str], Timing] = {}
    for _round in range(args.rounds):  # round robin, so a burst of load elsewhere hits every source alike
        for kind, source in sources.items():
            for mode, run in paths_of(source):
                t = timed(run)
                if (kind, mode) not in best or t.per_s > best[(kind, mode)].per_s:
                    best[(kind, mode)] = t
    rates = {key: t.per_s for key, t in best.items()}
    rows = [{"source": kind, "mode": mode, "images": t.items, "images_per_s": round(t.per_s, 1),
             "mb_per_s": round(total_mb / t.wall_s, 1)} for (kind, mode), t in best.items()]
    for row in rows:
        row["x_folder"] = round(row["images_per_s"] / rates[("folder", row["mode"])], 2)
    print_table(rows, [("source", "source", ""), ("mode", "mode", ""), ("images", "images", ",d"),
                       ("images_per_s", "images/s", ",.0f"), ("mb_per_s", "MB/s", ",.1f"),
                       ("x_folder", "x folder", ".2f")])
    report = Report("sources", args.quick, info, rows=rows,
                    extra={"image_size": SIZE, "png_mb": round(total_mb, 1), "tar": tar_path.name})
    report.targets.append(Target("tar shard read + validate, relative to the folder",
                                 rates[("webdataset tar", "read + validate")] / rates[("folder", "read + validate")],
                                 1.0, "x", note="the tar should be no slower than loose files"))
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
