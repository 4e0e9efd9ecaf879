"""The Benchmark tab: benchmarks/bench_cache.py's measurement, small enough to wait for in a browser.

A generated sample (the synthetic characters of `charattr demo-data`) goes through
`create_pipeline(config).iter_results` twice, each time with a fresh pipeline over one new
results database: the first run computes everything (model load included), the second finds
every fused row in the cache. Images/s of both, the speed-up, and the machine (described by
`charattr_core.machine`, as the benchmarks describe it). `make bench` is the full measurement.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from charattr_core.config import PipelineConfig
from charattr_core.machine import describe_machine, machine_info
from charattr_core.pipeline import RunSummary, create_pipeline
from charattr_core.stages import STAGE_FUSED
from charattr_core.synthetic import write_demo_dataset

MAX_IMAGES = 500


@dataclass
class Run:
    name: str
    images: int
    seconds: float
    computed: int
    from_cache: int

    @property
    def per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class BenchResult:
    model: str
    runs: list[Run]
    machine: str
    clip_note: str | None

    @property
    def speedup(self) -> float:
        first, second = self.runs
        return first.seconds / second.seconds if second.seconds > 0 else float("inf")

    def markdown(self) -> str:
        lines = ["| run | images | seconds | images/s | computed | from cache |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.name} | {r.images} | {r.seconds:.2f} | {r.per_s:,.1f} | {r.computed} | {r.from_cache} |"
                  for r in self.runs]
        lines += ["", f"**Cache speed-up: {self.speedup:,.1f}×** (second run over the same images vs the first).",
                  "", f"Model: `{self.model}`. Machine: {self.machine}."]
        if self.clip_note:
            lines += ["", f"CLIP not used: {self.clip_note}"]
        lines += ["", "The full benchmarks: `make bench` (see benchmarks/RESULTS.md)."]
        return "\n".join(lines)

    def figure(self):
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3), layout="constrained")
        ax = fig.add_subplot()
        bars = ax.barh([r.name for r in self.runs], [r.per_s for r in self.runs], color=["#888", "#2a7"])
        ax.bar_label(bars, fmt="%.1f img/s", padding=3)
        ax.set_xlabel("images per second")
        ax.margins(x=0.25)  # room for the labels
        ax.set_title(f"{self.model}: first run vs cached re-run ({self.speedup:,.0f}x)")
        return fig


def run_benchmark(config: PipelineConfig, images: int = 32, size: int = 128, work_dir: Path | None = None
                  ) -> BenchResult:
    """Time a first and a cached second run over `images` generated images."""
    images = max(1, min(int(images), MAX_IMAGES))
    with tempfile.TemporaryDirectory(prefix="charattr-app-bench-", dir=work_dir) as tmp:
        folder = Path(tmp) / "sample"
        write_demo_dataset(folder, n_images=images, n_shards=1, seed=0, size=size)
        config = config.replace(database_url=f"sqlite:///{Path(tmp) / 'bench.db'}", cache_results=True)
        runs, note = [], None
        for name in ("first run (empty cache)", "second run (cached)"):
            summary = RunSummary()
            started = time.perf_counter()
            with create_pipeline(config) as pipe:
                for _ in pipe.iter_results(folder, summary=summary):
                    pass
                note = note or pipe.clip_unavailable
            seconds = time.perf_counter() - started
            counts = summary.stages[STAGE_FUSED]
            runs.append(Run(name, summary.images, seconds, counts.computed, counts.skipped))
    model = f"{config.model_name}/{config.pretrained or 'random'}" if config.use_clip else "tags only (CLIP off)"
    return BenchResult(model, runs, describe_machine(machine_info()), note)
