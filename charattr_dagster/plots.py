"""Small matplotlib charts for the report, rendered to PNG bytes without touching pyplot's
global state (safe in a multi-threaded code server)."""

from __future__ import annotations

import base64
import io
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def bar_chart(values: Mapping[str, float], title: str, xlabel: str, limit: tuple[float, float] | None = None) -> bytes:
    """Horizontal bars, one per key, in the given order."""
    labels = list(values)
    fig = Figure(figsize=(6, 0.35 * len(labels) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(labels[::-1], [values[k] for k in labels][::-1], color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if limit:
        ax.set_xlim(*limit)
    return _png(fig)


def histogram(counts: Sequence[int], edges: Sequence[float], title: str, xlabel: str) -> bytes:
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge",
           color="#55a868", edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    return _png(fig)


def distributions(per_attribute: Mapping[str, Mapping[str, int]], top: int = 8, columns: int = 3) -> bytes:
    """A grid of small bar charts: the most frequent values of every attribute."""
    keys = list(per_attribute)
    rows = max(1, -(-len(keys) // columns))
    fig = Figure(figsize=(4 * columns, 2.6 * rows))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, columns, i + 1)
        items = sorted(per_attribute[key].items(), key=lambda kv: -kv[1])[:top]
        ax.barh([v for v, _ in items][::-1], [n for _, n in items][::-1], color="#8172b2")
        ax.set_title(key, fontsize=10)
        ax.tick_params(labelsize=8)
    return _png(fig)


def stacked_agreement(rows: Mapping[str, Mapping[str, int]], parts: Sequence[str], title: str) -> bytes:
    """Per attribute, the answered images split into `parts` (e.g. agreed / single source / conflict)."""
    labels = list(rows)[::-1]
    fig = Figure(figsize=(6, 0.35 * len(labels) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    left = [0.0] * len(labels)
    colours = ("#55a868", "#8c8c8c", "#c44e52", "#dd8452")
    for part, colour in zip(parts, colours):
        widths = [rows[k].get(part, 0) for k in labels]
        ax.barh(labels, widths, left=left, label=part, color=colour)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_title(title)
    ax.set_xlabel("images")
    ax.legend(fontsize="small", loc="lower right")
    return _png(fig)
