"""`attribute_report`: distributions, coverage, agreement between sources, confidence and — where
labels exist — accuracy on held-out images (`charattr_core.label_accuracy`), over every shard of
`fused_attributes`.

It streams the fused table (a few columns, one record batch at a time) into counters, then shows
the result three ways: table metadata and a markdown page with embedded PNG plots in the Dagster
UI, and a standalone HTML report (plus the PNGs) under the reports folder.
"""

import html
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import dagster as dg
import numpy as np
from dagster import AssetExecutionContext

from charattr_core.label_accuracy import SCOPE as ACCURACY_SCOPE
from charattr_core.label_accuracy import HeldOutAccuracy
from charattr_core.records import SOURCES
from charattr_core.schema import UNKNOWN, Vocabulary

from ..checks import coverage_table, distribution_table
from ..asset_keys import ATTRIBUTE_REPORT, FUSED_ATTRIBUTES, FUSION_POLICY
from ..metadata import Stopwatch
from ..partitions import SHARDS
from ..plots import bar_chart, data_uri, distributions, histogram, stacked_agreement
from ..resources import PipelineSettings, SourceResource
from ..warehouse import Warehouse
from .learning import EVALUATION_MARKDOWN

AGREEMENT_PARTS = ("agreed", "single source", "conflict")
CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)


class ReportTally:
    """Counters over fused rows; holds nothing per image except the labels it was given."""

    def __init__(self, vocabulary: Vocabulary, labels: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None):
        self.vocabulary = vocabulary
        self.labels = labels or {}
        self.rows = 0
        self.values: dict[str, Counter[str]] = {k: Counter() for k in vocabulary.keys}
        self.known: Counter[str] = Counter()
        self.confidence_sum: Counter[str] = Counter()
        self.agreement: dict[str, Counter[str]] = {k: Counter() for k in vocabulary.keys}
        self.strategies: Counter[str] = Counter()
        self.overall_confidence = np.zeros(len(CONFIDENCE_BINS) - 1, dtype=np.int64)
        self.held_out = HeldOutAccuracy(vocabulary, self.labels)
        self.signals: Counter[tuple[str, str, str]] = Counter()  # (clip, probes, policy) -> images

    def columns(self) -> list[str]:
        keys = list(self.vocabulary.keys)
        return ["image_id", "confidence", "attribute_strategies", "evidence", "versions", "notes", *keys,
                *(f"{k}_confidence" for k in keys)]

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        confidences = [float(r["confidence"] or 0.0) for r in rows]
        self.overall_confidence += np.histogram(confidences, bins=CONFIDENCE_BINS)[0]
        for row in rows:
            self.rows += 1
            evidence = json.loads(row["evidence"] or "{}")
            self.strategies.update(json.loads(row["attribute_strategies"] or "{}").values())
            self.signals[signals_of(json.loads(row["versions"] or "{}"), row["notes"] or "")] += 1
            self.held_out.add(row["image_id"], {k: row[k] for k in self.vocabulary.keys})
            for attr in self.vocabulary.attributes:
                key = attr.key
                values = tuple(row[key] or (UNKNOWN,))
                self.values[key].update(values)
                if values != (UNKNOWN,):
                    self.known[key] += 1
                    self.confidence_sum[key] += float(row[f"{key}_confidence"] or 0.0)
                    self.agreement[key][_agreement(evidence.get(key, ()))] += 1

    # -- summaries ---------------------------------------------------------------------------------
    def coverage(self) -> dict[str, float]:
        return {k: self.known[k] / self.rows if self.rows else 0.0 for k in self.vocabulary.keys}

    def mean_confidence(self) -> dict[str, float]:
        return {k: self.confidence_sum[k] / self.known[k] if self.known[k] else 0.0 for k in self.vocabulary.keys}

    def accuracy(self) -> dict[str, tuple[float, int]]:
        """Accuracy against labels on held-out images only (`label_accuracy.SCOPE`)."""
        return self.held_out.accuracy()

    def accuracy_note(self) -> str:
        return (f"Computed on {self.held_out.images} labelled held-out images only (the `holdout` split, which no "
                f"probe or policy was trained on; {self.held_out.excluded} labelled images of the training splits "
                "are left out). An `unknown` answer counts as wrong; multi-valued attributes score the Jaccard "
                "overlap.")


def known_labels(source_path: str, labels_path: str | None, vocabulary: Vocabulary
                 ) -> tuple[dict[str, dict[str, tuple[str, ...]]], str | None]:
    """Labels to score against: a demo dataset's ground truth (`ground_truth.jsonl` in the source
    folder), overridden by the user's corrections file when one is configured."""
    from charattr_core.synthetic import GROUND_TRUTH_FILE, load_ground_truth

    labels: dict[str, dict[str, tuple[str, ...]]] = {}
    origins = []
    truth_file = Path(source_path) / GROUND_TRUTH_FILE
    if truth_file.is_file():
        keys = set(vocabulary.keys)
        for image_id, truth in load_ground_truth(truth_file).items():
            labels[image_id] = {k: tuple(v) for k, v in truth.items() if k in keys and v and v != [UNKNOWN]}
        origins.append(str(truth_file))
    if labels_path:
        from charattr_core.policy_labels import load_labels
        for image_id, attrs in load_labels(labels_path, vocabulary).items():
            labels.setdefault(image_id, {}).update(attrs)
        origins.append(labels_path)
    return labels, ", ".join(origins) or None


# Notes are joined with "; ", which reasons may contain too: split at the known prefixes only.
_NOTE_PREFIXES = "clip unavailable|probes not used|policy not used|clip embedding missing"
_NOTE = re.compile(rf"({_NOTE_PREFIXES}): (.*?)(?=; (?:{_NOTE_PREFIXES}): |$)")


def signals_of(versions: Mapping[str, str], notes: str) -> tuple[str, str, str]:
    """(clip, probes, policy) of one fused row, each "used: ..." or "not used: why", from the versions
    that made it and its notes."""
    reasons = {m.group(1): m.group(2) for m in _NOTE.finditer(notes)}
    clip = versions.get("clip_embeddings")
    policy = versions.get("fusion_policy")
    return (f"used: {clip.split('+', 1)[-1]}" if clip else f"not used: {reasons.get('clip unavailable', 'off')}",
            "used" if versions.get("attribute_probes") else
            f"not used: {reasons.get('probes not used', 'none trained for this model')}",
            f"used: generation {policy.split('-', 1)[0]}" if policy else
            f"not used: {reasons.get('policy not used', 'fixed strategy ' + versions.get('strategy', '?'))}")


def _agreement(evidence) -> str:
    """How the sources stood on an answered attribute, from the fused evidence list."""
    if any(str(e).startswith("conflict:") for e in evidence):
        return "conflict"
    supporters = [e for e in evidence if e in SOURCES]
    return "agreed" if len(supporters) >= 2 else "single source"


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(tally: ReportTally, evaluation_md: str | None, reports_dir: Path) -> tuple[str, Path, dict[str, Path]]:
    """The markdown for the UI, and the HTML report + PNGs written under `reports_dir`."""
    coverage, confidence = tally.coverage(), tally.mean_confidence()
    plots = {
        "coverage": bar_chart(coverage, "Coverage: images with a known value", "share of images", (0, 1)),
        "confidence": histogram(tally.overall_confidence.tolist(), CONFIDENCE_BINS.tolist(),
                                "Overall confidence per image", "confidence"),
        "distributions": distributions({k: {v: n for v, n in c.items() if v != UNKNOWN}
                                        for k, c in tally.values.items()}),
        "agreement": stacked_agreement(tally.agreement, AGREEMENT_PARTS, "Agreement between sources (answered images)"),
    }
    titles = {"coverage": "Coverage", "confidence": "Confidence", "distributions": "Value distributions",
              "agreement": "Agreement between sources"}
    attr_rows = [[k, f"{coverage[k]:.1%}", f"{confidence[k]:.2f}",
                  *(tally.agreement[k][p] for p in AGREEMENT_PARTS)] for k in tally.vocabulary.keys]
    attr_header = ["attribute", "coverage", "mean confidence", *AGREEMENT_PARTS]
    accuracy = tally.accuracy()
    acc_rows = [[k, f"{a:.1%}", n] for k, (a, n) in accuracy.items()]
    acc_header = ["attribute", "accuracy", "labelled held-out images"]
    strategy_rows = [[s, n] for s, n in tally.strategies.most_common()]
    signal_header = ["tags", "CLIP", "probes", "policy", "images"]
    signal_rows = [["used", *combo, n] for combo, n in tally.signals.most_common()]

    md = [f"# Attribute report\n\n{tally.rows} images.\n", _markdown_table(attr_header, attr_rows),
          "\n## Signals used\n\n" + _markdown_table(signal_header, signal_rows)]
    for name, png in plots.items():
        md.append(f"\n## {titles[name]}\n\n![{name}]({data_uri(png)})")
    md.append("\n## Strategies used (per attribute decision)\n\n"
              + _markdown_table(["strategy", "decisions"], strategy_rows))
    if acc_rows:
        md.append("\n## Accuracy against labels (held-out images)\n\n" + tally.accuracy_note() + "\n\n"
                  + _markdown_table(acc_header, acc_rows))
    if evaluation_md:
        md.append("\n" + evaluation_md)

    reports_dir.mkdir(parents=True, exist_ok=True)
    png_paths: dict[str, Path] = {}
    for name, png in plots.items():
        png_paths[name] = reports_dir / f"attribute_report_{name}.png"
        png_paths[name].write_bytes(png)
    sections = [f"<h2>{titles[n]}</h2><img src='{data_uri(p)}' alt='{n}'>" for n, p in plots.items()]
    body = [f"<h1>Attribute report</h1><p>{tally.rows} images.</p>", _html_table(attr_header, attr_rows),
            "<h2>Signals used</h2>", _html_table(signal_header, signal_rows), *sections,
            "<h2>Strategies used</h2>", _html_table(["strategy", "decisions"], strategy_rows)]
    if acc_rows:
        body += ["<h2>Accuracy against labels (held-out images)</h2>", f"<p>{html.escape(tally.accuracy_note())}</p>",
                 _html_table(acc_header, acc_rows)]
    if evaluation_md:
        body += ["<h2>Fusion evaluation (held-out)</h2>", f"<pre>{html.escape(evaluation_md)}</pre>"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>charattr attribute report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    html_path = reports_dir / "attribute_report.html"
    tmp = html_path.with_name(f".{html_path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, html_path)
    return "\n".join(md), html_path, png_paths


def build_attribute_report(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=ATTRIBUTE_REPORT, group_name="product", deps=[FUSED_ATTRIBUTES, FUSION_POLICY], code_version=code_version,
        kinds={"python", "html"},
        description="Distributions, coverage, agreement between sources, confidence and accuracy where labels "
                    "exist, over every shard of fused_attributes: plots in the UI and a standalone HTML report.",
    )
    def attribute_report(context: AssetExecutionContext, source: SourceResource, warehouse: Warehouse,
                         settings: PipelineSettings) -> dg.MaterializeResult:
        clock = Stopwatch()
        vocabulary = settings.load_vocabulary()
        labels, label_origin = known_labels(source.path, settings.labels, vocabulary)
        tally = ReportTally(vocabulary, labels)
        shards = [k for k in context.instance.get_dynamic_partitions(SHARDS) if warehouse.has(FUSED_ATTRIBUTES, k)]
        for batch in warehouse.iter_batches(FUSED_ATTRIBUTES, shards, columns=tally.columns()):
            tally.add_rows(batch.to_pylist())
        evaluation_file = warehouse.asset_dir(FUSION_POLICY) / EVALUATION_MARKDOWN
        evaluation_md = evaluation_file.read_text(encoding="utf-8") if evaluation_file.is_file() else None
        markdown, html_path, pngs = render(tally, evaluation_md, Path(settings.reports))
        value_counts = Counter({(k, v): n for k, c in tally.values.items() for v, n in c.items()})
        metadata: dict[str, Any] = {
            "images": tally.rows, "shards": len(shards), "report": dg.MetadataValue.md(markdown),
            "html_report": dg.MetadataValue.path(str(html_path)),
            "coverage": coverage_table(tally.coverage()),
            "value_distribution": distribution_table(value_counts, tally.rows),
            "mean_confidence": dg.MetadataValue.json({k: round(v, 4) for k, v in tally.mean_confidence().items()}),
            "seconds": round(clock.seconds, 3),
            "signals": dg.MetadataValue.json([{"clip": c, "probes": pr, "policy": po, "images": n}
                                              for (c, pr, po), n in tally.signals.most_common()]),
        }
        for name, path in pngs.items():
            metadata[f"plot/{name}"] = dg.MetadataValue.path(str(path))
        if label_origin:
            metadata["labels"] = label_origin
        if tally.accuracy():
            metadata["accuracy"] = dg.MetadataValue.json({k: round(a, 4) for k, (a, _n) in tally.accuracy().items()})
            metadata["accuracy_scope"] = ACCURACY_SCOPE
        return dg.MaterializeResult(metadata=metadata)

    return attribute_report


