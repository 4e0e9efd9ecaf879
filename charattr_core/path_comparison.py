"""`charattr eval --compare-precision P`: what another CPU inference path (int8 above all) does to
the accuracy of the visual signals, measured instead of guessed.

int8 moves embeddings more than bf16 does (cosine ~0.9998 to fp32 against ~0.99996), so it is
opt-in. This module embeds the same images on two paths: the one the run asked for
(`--precision`/`--runtime`, auto by default) and the compared one. Each path learns its own probes
and policy from its own embeddings (each path has its own model key, so nothing learnt on one is
applied to the other), and zero-shot (`clip`) and `probe` accuracy are compared on the same
held-out items, overall and per attribute: `evaluation.compare_runs`, a paired bootstrap over
images. The signals of each path are spilled to disk and streamed back (`signal_spill.py`), one
path at a time, so memory holds one model and a batch of signals, as plain `charattr eval` does.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .errors import CharattrError
from .evaluation import OVERALL, Comparison, EvalReport, Interval, compare_runs
from .learning import LearningResult, learn_and_evaluate
from .signal_spill import SignalSpill

COMPARED_METHODS = ("clip", "probe")  # the signals an inference path changes (tags do not depend on it)


@dataclass(frozen=True)
class PathRun:
    """One inference path's evaluation: what it is called, its model key and its report."""

    label: str  # "onnxruntime int8"
    model_key: str
    report: EvalReport


@dataclass(frozen=True)
class PathRow:
    """One method on one attribute (or overall): accuracy on each path and the paired difference."""

    method: str
    attribute: str
    n_items: int
    asked: Interval
    compared: Interval
    difference: Comparison  # compared - asked


def learn_on_source(pipe, source: str | Path, *, labels: Mapping, limit: int | None, n_bootstrap: int, seed: int,
                    spill_dir: Path, summary, keep_items: Sequence[str] = ()) -> LearningResult:
    """`charattr eval`'s learning on one pipeline: signals computed once and spilled to disk, then
    probes, policy and the held-out evaluation from `learning.learn_and_evaluate`."""
    batch = pipe.config.stage_batch_size
    with SignalSpill(spill_dir, batch_size=batch) as spill:
        spill.write(pipe.iter_signals(source, limit=limit, summary=summary, batch_size=batch))
        return learn_and_evaluate(spill, pipe.vocabulary, model_key=pipe.clip.model_key if pipe.clip else None,
                                  scorer=pipe._zero_shot(), user_labels=labels, thresholds=pipe.thresholds,
                                  default_strategy=pipe.config.fusion_strategy, n_bootstrap=n_bootstrap, seed=seed,
                                  keep_items=keep_items)


def require_clip(pipe) -> None:
    """Stop before any work when the pipeline has no CLIP model to compare (weights missing, ...)."""
    if pipe.clip is None:
        raise CharattrError(f"Comparing inference paths needs CLIP, which is unavailable: {pipe.clip_unavailable}")


def path_run(pipe, report: EvalReport) -> PathRun:
    """The `PathRun` of a pipeline whose CLIP model embedded the report's images."""
    require_clip(pipe)
    return PathRun(str(pipe.clip.inference_path), pipe.clip.model_key, report)


@dataclass(frozen=True)
class PathComparison:
    """The compared path against the asked one, for `COMPARED_METHODS`, overall and per attribute."""

    asked: PathRun
    compared: PathRun
    rows: tuple[PathRow, ...]

    @property
    def same_path(self) -> bool:
        return self.asked.model_key == self.compared.model_key

    def names(self) -> tuple[str, str]:
        """Column names of the two paths (told apart when the same path was compared with itself)."""
        if self.asked.label == self.compared.label:
            return f"{self.asked.label} (asked)", f"{self.compared.label} (compared)"
        return self.asked.label, self.compared.label

    def row(self, method: str, attribute: str = OVERALL) -> PathRow:
        return next(r for r in self.rows if r.method == method and r.attribute == attribute)

    def to_markdown(self) -> str:
        asked, compared = self.names()
        report = self.asked.report
        lines = [f"## Inference path: {compared} against {asked}\n",
                 f"The same {report.n_images} held-out images, embedded on both paths (model keys "
                 f"`{self.asked.model_key}` and `{self.compared.model_key}`); probes and policy were trained on "
                 f"each path's own embeddings. Accuracy in %, 95% bootstrap intervals ({report.n_bootstrap} "
                 f"resamples of images, seed {report.seed}); the difference is {compared} minus {asked}, paired: "
                 "the same images and (image, attribute) items on both paths.\n"]
        if self.same_path:
            lines.append("Both are the same path, so every difference is 0 by construction.\n")
        lines += [f"| method | attribute | items | {asked} | {compared} | difference (points) |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            d = r.difference
            lines.append(f"| {r.method} | {r.attribute} | {r.n_items} | {r.asked.as_points()} | "
                         f"{r.compared.as_points()} | {_signed(d.margin)} [{_signed(d.low)}, {_signed(d.high)}] |")
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | Path) -> Path:
        """One row per method and attribute: each path's accuracy with its interval, the paired difference."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["method", "attribute", "n_items", "asked_path", "asked_model_key", "asked_accuracy",
                          "asked_low", "asked_high", "compared_path", "compared_model_key", "compared_accuracy",
                          "compared_low", "compared_high", "difference", "difference_low", "difference_high"])
            for r in self.rows:
                out.writerow([r.method, r.attribute, r.n_items,
                              self.asked.label, self.asked.model_key, *_numbers(r.asked),
                              self.compared.label, self.compared.model_key, *_numbers(r.compared),
                              f"{r.difference.margin:.6g}", f"{r.difference.low:.6g}", f"{r.difference.high:.6g}"])
        return path

    def summary_lines(self) -> list[str]:
        """A few lines for the terminal: each method's overall accuracy on both paths and the difference."""
        asked, compared = self.names()
        lines = [f"{compared} against {asked} on {self.asked.report.n_images} held-out images (paired, 95% CI):"]
        for method in COMPARED_METHODS:
            if any(r.method == method for r in self.rows):
                r = self.row(method)
                d = r.difference
                lines.append(f"  {method}: {100 * r.asked.value:.1f}% -> {100 * r.compared.value:.1f}%, "
                             f"{_signed(d.margin)} points [{_signed(d.low)}, {_signed(d.high)}]")
        return lines


def _signed(fraction: float) -> str:
    """Points with a sign and two decimals (differences are small, and the sign of an interval's
    end matters); one that rounds to zero is +0.00, never -0.00."""
    return f"{round(100 * fraction, 2) + 0.0:+.2f}"


def _numbers(iv: Interval) -> list[str]:
    return [f"{iv.value:.6g}", f"{iv.low:.6g}", f"{iv.high:.6g}"]


def compare_paths(asked: PathRun, compared: PathRun, methods: Sequence[str] = COMPARED_METHODS) -> PathComparison:
    """Pair the two paths' per-item scores (`evaluation.compare_runs`), overall and per attribute."""
    a, b = asked.report, compared.report
    rows = []
    for method in methods:
        if method not in a.methods or method not in b.methods:
            continue
        for attribute in (OVERALL, *a.attributes):
            try:
                difference = compare_runs(b, a, method, attribute, names=(compared.label, asked.label))
            except ValueError as exc:
                raise CharattrError(f"The two inference paths cannot be paired: {exc}") from None
            n = sum(a.n_items.values()) if attribute == OVERALL else a.n_items[attribute]
            rows.append(PathRow(method, attribute, n, a.metric(method, attribute), b.metric(method, attribute),
                                difference))
    return PathComparison(asked, compared, tuple(rows))
