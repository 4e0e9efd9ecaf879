"""What every benchmark shares: the machine description, timing, peak RSS, tables, JSON results and
the generated workloads (cached under benchmarks/data/, which git ignores).

Every number a benchmark reports is measured in the process that prints it, next to its baseline:
the machine may be shared, so only ratios taken in the same process (and, where possible, in
interleaved rounds) are comparable. The load average before and after each benchmark is recorded
with its results.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

# The machine is described by charattr_core.machine, so the web app's Benchmark tab says the same.
from charattr_core.machine import cpu_model, describe_machine, load_average, machine_info, usable_cores  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
DATA_DIR = ROOT / "benchmarks" / "data"  # generated workloads, reused between runs (gitignored)


# -- measuring ------------------------------------------------------------------------------------------

def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


@dataclass
class Timing:
    """Wall and CPU seconds of one measured run, and how many items it handled."""

    items: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.items / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def cpu_per_s(self) -> float:
        return self.items / self.cpu_s if self.cpu_s > 0 else float("inf")


def timed(run: Callable[[], int | None], items: int | None = None) -> Timing:
    """Time `run()`; it returns the number of items it handled unless `items` says so."""
    wall, cpu = time.perf_counter(), time.process_time()
    done = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = items if items is not None else int(done or 0)
    return Timing(count, wall, cpu)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# -- reporting ------------------------------------------------------------------------------------------

@dataclass
class Target:
    """One requirement of the issue: `value` must reach `target` (or stay at most `target`)."""

    name: str
    value: float
    target: float
    unit: str = ""
    at_most: bool = False
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.at_most else self.value >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": round(self.value, 4), "target": self.target, "unit": self.unit,
                "at_most": self.at_most, "met": self.met, "note": self.note}

    def line(self) -> str:
        op = "<=" if self.at_most else ">="
        verdict = "met" if self.met else "NOT met"
        note = f" ({self.note})" if self.note else ""
        return f"{self.name}: {self.value:,.2f}{self.unit} (target {op} {self.target:,g}{self.unit}): {verdict}{note}"


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """Print `rows` as a table; `columns` are (key, header, format spec such as ',.1f')."""
    cells = [[_fmt(row.get(key), spec) for key, _h, spec in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (_k, h, _s) in enumerate(columns)]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, ((_k, h, _s), w) in enumerate(zip(columns, widths))))
    for c in cells:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))))


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and spec:
        return format(value, spec)
    return str(value)


@dataclass
class Report:
    """A benchmark's result file: what was measured, on which machine, against which targets."""

    benchmark: str
    quick: bool
    machine: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self) -> Path:
        """Print the targets and write `benchmarks/results/<benchmark>.json`."""
        for target in self.targets:
            print(target.line())
        self.machine["load_average_1m_after"] = load_average()
        payload = {"benchmark": self.benchmark, "quick": self.quick, "machine": self.machine,
                   "peak_rss_mib": peak_rss_mib(), "results": self.rows,
                   "targets": [t.to_dict() for t in self.targets], **self.extra,
                   "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.benchmark}.json"
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"peak RSS {payload['peak_rss_mib']:,.0f} MiB; wrote {path.relative_to(ROOT)}")
        return path


def header(title: str, info: dict[str, Any]) -> None:
    print(f"== {title} ==")
    print(f"machine: {describe_machine(info)}")


# -- workloads ------------------------------------------------------------------------------------------

FILLER_TAGS = (
    "highres", "absurdres", "looking_at_viewer", "simple_background", "white_background", "upper_body",
    "full_body", "cowboy_shot", "standing", "sitting", "holding", "outdoors", "indoors", "day", "night", "sky",
    "cloud", "tree", "flower", "bangs", "hair_between_eyes", "closed_mouth", "open_mouth", "bare_shoulders",
    "collarbone", "long_sleeves", "short_sleeves", "frills", "sidelocks", "parted_lips", "hand_up", "arms_up",
    "from_side", "blurry", "depth_of_field", "signature", "artist_name", "commentary_request", "original",
    "touhou", "genshin_impact", "animal_ears", "cat_ears", "tail", "wings", "halo", "heart", "water", "window",
    "chair", "book", "blush", "solo_focus", "translated", "english_commentary", "white_shirt", "black_skirt",
)
COUNT_TAGS = ("1girl", "1girl", "1girl", "1girl", "1boy", "1boy", "2girls multiple_girls", "1boy 1girl",
              "multiple_girls 3girls", "no_humans")


class TagStrings:
    """Danbooru-looking tag strings (~30 tags: counting tags, attribute tags of the vocabulary and
    common general tags, sorted like Danbooru writes them), generated without any real data."""

    def __init__(self, seed: int = 0) -> None:
        from charattr_core.schema import load_vocabulary

        vocabulary = load_vocabulary()
        self.by_attribute = [[t for v in a.values for t in v.tags] for a in vocabulary.attributes
                             if a.key != "gender"]
        self.rng = random.Random(seed)

    def make(self) -> str:
        rng = self.rng
        tags = set(rng.choice(COUNT_TAGS).split())
        if rng.random() < 0.7:
            tags.add("solo")
        for choices in self.by_attribute:
            for _ in range(rng.choice((0, 1, 1, 1, 2))):
                tags.add(rng.choice(choices))
        target = rng.randint(24, 36)
        while len(tags) < target:
            tags.add(rng.choice(FILLER_TAGS))
        return " ".join(sorted(tags))


def tiny_pngs(count: int, size: int = 8, start: int = 0) -> Iterator[bytes]:
    """`count` distinct tiny PNGs (noise whose first pixels encode the index): fast to make and to hash."""
    import numpy as np
    from PIL import Image

    base = np.random.default_rng(12345).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    flat = base.reshape(-1)
    for index in range(start, start + count):
        flat[:8] = np.frombuffer(index.to_bytes(8, "little"), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(base).save(buffer, format="PNG", compress_level=1)
        yield buffer.getvalue()


def write_parquet_shards(out_dir: Path, shards: int, per_shard: int, *, image_size: int = 8, seed: int = 0,
                         row_group_size: int = 1000) -> Path:
    """`shards` Parquet files of `per_shard` rows (tiny PNG bytes + a tag string), made once.

    A `done.json` marker records what was written; a folder that matches it is reused as is.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = {"shards": shards, "per_shard": per_shard, "image_size": image_size, "seed": seed, "version": 1}
    marker = out_dir / "done.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.parquet"):
        old.unlink()
    tags = TagStrings(seed)
    schema = pa.schema([("image", pa.binary()), ("tags", pa.string())])
    started = time.perf_counter()
    for k in range(shards):
        path = out_dir / f"shard-{k:05d}.parquet"
        with pq.ParquetWriter(path, schema) as writer:
            for first in range(0, per_shard, row_group_size):
                n = min(row_group_size, per_shard - first)
                images = list(tiny_pngs(n, image_size, start=k * per_shard + first))
                writer.write_table(pa.table({"image": images, "tags": [tags.make() for _ in range(n)]},
                                            schema=schema))
    marker.write_text(json.dumps(spec))
    print(f"generated {shards} x {per_shard:,} rows in {out_dir.relative_to(ROOT)} "
          f"({time.perf_counter() - started:.1f} s)")
    return out_dir


def write_demo_folder(out_dir: Path, images: int, shards: int, size: int = 256, seed: int = 0) -> Path:
    """The synthetic demo data (drawn characters, sidecar tags) as an image folder, made once."""
    from charattr_core.synthetic import write_demo_dataset

    spec = {"images": images, "shards": shards, "size": size, "seed": seed, "version": 1}
    marker = out_dir / "done.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return out_dir
    started = time.perf_counter()
    write_demo_dataset(out_dir, n_images=images, n_shards=shards, seed=seed, size=size)
    marker.write_text(json.dumps(spec))
    print(f"generated {images:,} synthetic {size}x{size} images in {out_dir.relative_to(ROOT)} "
          f"({time.perf_counter() - started:.1f} s)")
    return out_dir


def run_child(args: Iterable[str], *, env: dict[str, str] | None = None, timeout: float | None = None
              ) -> dict[str, Any]:
    """Run `python -m <args>` in a fresh process that prints one JSON object as its last line."""
    cmd = [sys.executable, "-m", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
