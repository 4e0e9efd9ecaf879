"""Asset checks: the data-quality rules, evaluated while an asset streams its rows out.

Each asset declares its `AssetCheckSpec`s and yields the `AssetCheckResult`s computed by the
tallies below, which see every row as it is written (no second pass over the data). This works
for runs over several partitions at once, where a separate `@asset_check` would have to re-read
each partition. Blocking checks stop downstream assets in the same run.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Mapping, Sequence

import dagster as dg
import numpy as np

from charattr_core.records import AttributeEstimate, ImageRecord
from charattr_core.schema import Vocabulary

FAILED_FRACTION = "failed_fraction"
VALUES_IN_VOCABULARY = "values_in_vocabulary"
CONFIDENCE_IN_RANGE = "confidence_in_range"
ATTRIBUTE_COVERAGE = "attribute_coverage"
EMBEDDINGS_VALID = "embeddings_finite_and_normalised"
MODEL_AVAILABLE = "model_available"

MAX_EXAMPLES = 20  # offending rows listed in a check's metadata
NORM_TOLERANCE = 1e-2  # float16 storage rounds a unit vector's norm by ~1e-3


def failed_fraction_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(FAILED_FRACTION, asset=asset, blocking=True,
                             description="The share of images that could not be read or decoded stays within "
                                         "the configured bound (max_failed_fraction); lists the failed rows' reasons.")


def estimate_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(VALUES_IN_VOCABULARY, asset=asset, blocking=True,
                          description="Every value is one the attribute vocabulary allows (or 'unknown')."),
        dg.AssetCheckSpec(CONFIDENCE_IN_RANGE, asset=asset, blocking=True,
                          description="Every confidence is a number in [0, 1]."),
        dg.AssetCheckSpec(ATTRIBUTE_COVERAGE, asset=asset,
                          description="Reports, per attribute, the share of images with a known value; warns "
                                      "when an attribute is never known."),
    ]


def embedding_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(EMBEDDINGS_VALID, asset=asset, blocking=True,
                          description="Every embedding is finite and L2-normalised (norm 1 within float16 rounding)."),
        dg.AssetCheckSpec(MODEL_AVAILABLE, asset=asset,
                          description="The CLIP weights could be loaded; warns (without blocking) when they "
                                      "could not and fusion ran on the remaining signals."),
    ]


def _examples_table(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: str(r.get(c) or "") for c in columns}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]))


class FailureTally:
    """Counts ok/failed images and keeps the first failures' reasons."""

    def __init__(self) -> None:
        self.total = 0
        self.failed = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[dict[str, str]] = []

    def add(self, record: ImageRecord) -> None:
        self.total += 1
        if record.ok:
            return
        self.failed += 1
        error = record.error or "unknown error"
        self.reasons[error.split(":")[0]] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"source_uri": record.source_uri, "error": error})

    @property
    def fraction(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def result(self, bound: float) -> dg.AssetCheckResult:
        passed = self.fraction <= bound
        return dg.AssetCheckResult(
            check_name=FAILED_FRACTION, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
            description=None if passed else
            f"{self.failed} of {self.total} images failed ({self.fraction:.1%}), above the bound of {bound:.1%}.",
            metadata={
                "failed": self.failed, "total": self.total, "failed_fraction": round(self.fraction, 4),
                "max_failed_fraction": bound,
                "reasons": _examples_table([{"reason": k, "count": str(v)} for k, v in self.reasons.most_common()],
                                           ["reason", "count"]),
                "failed_rows": _examples_table(self.examples, ["source_uri", "error"]),
            })


class EstimateTally:
    """Checks and summarises per-attribute estimates (tag parses or fused attributes)."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.allowed = {key: vocabulary.allowed_values(key) for key in vocabulary.keys}
        self.rows = 0
        self.known: Counter[str] = Counter()  # attribute -> images with a value other than unknown
        self.values: Counter[tuple[str, str]] = Counter()  # (attribute, value) -> images
        self.bad_values: list[dict[str, str]] = []
        self.bad_value_count = 0
        self.bad_confidences: list[dict[str, str]] = []
        self.bad_confidence_count = 0

    def add(self, image_id: str, estimates: Mapping[str, AttributeEstimate],
            overall_confidence: float | None = None) -> None:
        self.rows += 1
        for key, est in estimates.items():
            allowed = self.allowed.get(key)
            unexpected = [v for v in est.values if allowed is None or v not in allowed]
            if unexpected:
                self.bad_value_count += 1
                if len(self.bad_values) < MAX_EXAMPLES:
                    self.bad_values.append({"image_id": image_id, "attribute": key, "values": ", ".join(unexpected)})
            self._confidence(image_id, key, est.confidence)
            if not est.is_unknown:
                self.known[key] += 1
            for v in est.values:
                self.values[(key, v)] += 1
        if overall_confidence is not None:
            self._confidence(image_id, "confidence", overall_confidence)

    def _confidence(self, image_id: str, what: str, value: float) -> None:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
            self.bad_confidence_count += 1
            if len(self.bad_confidences) < MAX_EXAMPLES:
                self.bad_confidences.append({"image_id": image_id, "attribute": what, "confidence": repr(value)})

    def coverage(self) -> dict[str, float]:
        return {key: (self.known[key] / self.rows if self.rows else 0.0) for key in self.vocabulary.keys}

    def results(self) -> list[dg.AssetCheckResult]:
        coverage = self.coverage()
        never_known = [k for k, c in coverage.items() if c == 0.0]
        return [
            dg.AssetCheckResult(
                check_name=VALUES_IN_VOCABULARY, passed=self.bad_value_count == 0,
                description=None if not self.bad_value_count else
                f"{self.bad_value_count} estimates hold values outside the vocabulary.",
                metadata={"rows": self.rows, "estimates_with_unknown_values": self.bad_value_count,
                          "examples": _examples_table(self.bad_values, ["image_id", "attribute", "values"])}),
            dg.AssetCheckResult(
                check_name=CONFIDENCE_IN_RANGE, passed=self.bad_confidence_count == 0,
                description=None if not self.bad_confidence_count else
                f"{self.bad_confidence_count} confidences lie outside [0, 1].",
                metadata={"rows": self.rows, "confidences_out_of_range": self.bad_confidence_count,
                          "examples": _examples_table(self.bad_confidences, ["image_id", "attribute", "confidence"])}),
            dg.AssetCheckResult(
                check_name=ATTRIBUTE_COVERAGE, passed=not (self.rows and never_known),
                severity=dg.AssetCheckSeverity.WARN,
                description=None if not (self.rows and never_known) else
                f"No image has a known value for: {', '.join(never_known)}.",
                metadata={"rows": self.rows, "coverage": coverage_table(coverage),
                          **{f"coverage/{k}": round(v, 4) for k, v in coverage.items()}}),
        ]

    def distribution(self) -> dg.TableMetadataValue:
        return distribution_table(self.values, self.rows)


class EmbeddingTally:
    """Checks that embeddings are finite and unit-length."""

    def __init__(self) -> None:
        self.rows = 0
        self.failed = 0
        self.invalid = 0
        self.examples: list[dict[str, str]] = []
        self.dims: set[int] = set()

    def add(self, image_id: str, embedding: np.ndarray | None) -> None:
        self.rows += 1
        if embedding is None:
            self.failed += 1
            return
        vec = np.asarray(embedding, dtype=np.float32)
        self.dims.add(int(vec.shape[-1]))
        norm = float(np.linalg.norm(vec))
        if not (np.isfinite(vec).all() and abs(norm - 1.0) <= NORM_TOLERANCE):
            self.invalid += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append({"image_id": image_id, "norm": f"{norm:.4g}"})

    def result(self) -> dg.AssetCheckResult:
        passed = self.invalid == 0 and len(self.dims) <= 1
        reason = None
        if self.invalid:
            reason = f"{self.invalid} embeddings are not finite or not unit-length."
        elif len(self.dims) > 1:
            reason = f"Embeddings of different lengths in one run: {sorted(self.dims)}."
        return dg.AssetCheckResult(
            check_name=EMBEDDINGS_VALID, passed=passed, description=reason,
            metadata={"rows": self.rows, "invalid": self.invalid, "failed": self.failed,
                      "dimensions": ", ".join(map(str, sorted(self.dims))) or "none",
                      "examples": _examples_table(self.examples, ["image_id", "norm"])})


def model_available_result(unavailable: str | None, model_key: str, switched_off: bool = False
                           ) -> dg.AssetCheckResult:
    """WARN (non-blocking) when the CLIP weights could not be loaded; passes when CLIP was switched
    off on purpose (the reason is still in the metadata)."""
    return dg.AssetCheckResult(
        check_name=MODEL_AVAILABLE, passed=unavailable is None or switched_off, severity=dg.AssetCheckSeverity.WARN,
        description=None if unavailable is None else f"CLIP not used: {unavailable}",
        metadata={"model": model_key, "available": unavailable is None, "reason": unavailable or ""})


def coverage_table(coverage: Mapping[str, float]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"attribute": k, "coverage": round(v, 4)}) for k, v in coverage.items()],
        schema=dg.TableSchema(columns=[dg.TableColumn("attribute", "string"), dg.TableColumn("coverage", "float")]))


def distribution_table(values: Mapping[tuple[str, str], int], rows: int) -> dg.TableMetadataValue:
    """Per attribute and value: how many images have it and their share."""
    ordered: Iterable[tuple[tuple[str, str], int]] = sorted(values.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1]))
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"attribute": a, "value": v, "images": n, "share": round(n / rows, 4) if rows else 0.0})
                 for (a, v), n in ordered],
        schema=dg.TableSchema(columns=[dg.TableColumn("attribute", "string"), dg.TableColumn("value", "string"),
                                       dg.TableColumn("images", "int"), dg.TableColumn("share", "float")]))

