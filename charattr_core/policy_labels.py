"""Labels for training and evaluating the fusion policy: self-supervision and user corrections.

Two kinds of label, per image and attribute:

(a) self-supervised: the tag parse is confident (>= the accept threshold) — its answer becomes the
    label and the tags source of *that attribute* is hidden from the example, so no strategy can
    copy its own answer key. The other attributes of the image keep their tags.
(b) user corrections from a labels file (CSV or Parquet, columns `image_id, attribute, value`,
    one row per value, several rows for a multi-valued attribute). They always win over (a), and
    the tags stay visible for them (a correction is independent of the tags).

Which images may be used where is decided by `splits.py` (policy training on `policy_train`,
evaluation on `holdout`); `build_example` itself does not filter.

Honest limit of (a): the policy only ever learns from images whose tags were withheld for that
attribute, i.e. as if the tags were missing. That is the situation in which the choice of strategy
matters most (with confident tags every sensible strategy returns them), but the policy never
sees a confident, visible tag parse in training; user corrections are what teach it that case.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

from .errors import ConfigError
from .evaluation import EvalExample
from .fusion import FusionContext, clean_estimate
from .records import AttributeEstimate, TagParse
from .schema import UNKNOWN, Vocabulary, normalize_tag

Labels = dict[str, dict[str, tuple[str, ...]]]  # image_id -> attribute -> values
LABEL_COLUMNS = ("image_id", "attribute", "value")


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = [c for c in LABEL_COLUMNS if c not in columns]
    if missing:
        raise ConfigError(f"Labels file {path} lacks the column(s) {', '.join(missing)}; "
                          "it needs image_id, attribute, value.")


def _read_rows(path: Path) -> list[dict[str, object]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = [c.strip() for c in reader.fieldnames or []]
                reader.fieldnames = header
                _check_columns(path, header)
                return list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"Labels file {path} is not a readable UTF-8 CSV file ({exc}).") from None
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            _check_columns(path, pq.read_schema(path).names)
            return pq.read_table(path, columns=list(LABEL_COLUMNS)).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(f"Labels file {path} is not a readable Parquet file ({exc}).") from None
    raise ConfigError(f"Labels file {path} must be a .csv or .parquet file.")


def load_labels(path: str | Path, vocabulary: Vocabulary) -> Labels:
    """Read user corrections: `{image_id: {attribute: (value, ...)}}`, values in vocabulary order.

    Attributes may be given by key (`hair_color`) or seed label (`Hair Color`), values with
    spaces or underscores. An unknown attribute or value, an empty field, `unknown` as a value or
    two different values for a single-valued attribute is a `ConfigError` naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Labels file {path} does not exist.")
    by_name = {a.key: a for a in vocabulary.attributes}
    by_name.update({normalize_tag(a.label): a for a in vocabulary.attributes})
    collected: dict[str, dict[str, set[str]]] = {}
    for row_number, row in enumerate(_read_rows(path), start=2):  # row 1 is the header
        where = f"Labels file {path}, row {row_number}"
        image_id, attr_name, value = (str(row.get(c) or "").strip() for c in LABEL_COLUMNS)
        if not image_id or not attr_name or not value:
            raise ConfigError(f"{where}: image_id, attribute and value must all be filled in.")
        attribute = by_name.get(normalize_tag(attr_name))
        if attribute is None:
            raise ConfigError(f"{where}: unknown attribute {attr_name!r}; known attributes are: {', '.join(vocabulary.keys)}.")
        value = normalize_tag(value)
        if value == UNKNOWN or value not in attribute.value_names:
            raise ConfigError(f"{where}: {value!r} is not a value of {attribute.key}; allowed values are: "
                              f"{', '.join(attribute.value_names)}.")
        values = collected.setdefault(image_id, {}).setdefault(attribute.key, set())
        values.add(value)
        if not attribute.multi and len(values) > 1:
            raise ConfigError(f"{where}: {attribute.key} is single-valued but image {image_id} is labelled "
                              f"{' and '.join(sorted(values))}.")
    return {image_id: {key: tuple(v for v in vocabulary.attribute(key).value_names if v in vals)
                       for key, vals in attrs.items()}
            for image_id, attrs in collected.items()}


def build_example(image_id: str, sources: Mapping[str, "Mapping[str, AttributeEstimate] | TagParse | None"],
                  vocabulary: Vocabulary, context: FusionContext | None = None,
                  user_labels: Mapping[str, tuple[str, ...]] | None = None,
                  accept: float = 0.8) -> EvalExample | None:
    """A labelled example for policy training or evaluation; None when no attribute has a label.

    User labels win; otherwise a tag estimate with confidence >= `accept` becomes the label and
    is removed from the example's tags source (hidden), so the sources never see their label.
    """
    tag_parse = sources.get("tags") if isinstance(sources.get("tags"), TagParse) else None
    per_source = {name: dict(est.estimates if isinstance(est, TagParse) else est)
                  for name, est in sources.items() if est is not None}
    tags = per_source.get("tags", {})
    labels: dict[str, tuple[str, ...]] = {}
    for attribute in vocabulary.attributes:
        key = attribute.key
        if user_labels and user_labels.get(key):
            labels[key] = tuple(user_labels[key])
            continue
        answer = clean_estimate(attribute, tags.get(key), "tags")
        if answer is not None and answer.confidence >= accept:
            labels[key] = answer.values
            del tags[key]  # hidden: the label must not be visible to the sources it judges
    if not labels:
        return None
    ctx = context or FusionContext.from_records(tag_parse=tag_parse)  # type: ignore[arg-type]
    return EvalExample(image_id=image_id, sources=per_source, context=ctx, labels=labels)
