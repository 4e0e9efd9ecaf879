"""The attribute vocabulary: attributes, their values, Danbooru tags and CLIP prompts.

`attributes.toml` beside this file is the default and the one source of truth; a user can pass
a file of the same shape. Everything downstream (tag parser, zero-shot prompts, probes, fusion,
output columns, asset checks) reads the vocabulary from here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import ConfigError

UNKNOWN = "unknown"
DEFAULT_VOCABULARY_PATH = Path(__file__).with_name("attributes.toml")


def normalize_tag(tag: str) -> str:
    """Danbooru spelling: lower case, spaces as underscores, no surrounding blanks."""
    return "_".join(tag.strip().lower().split())


@dataclass(frozen=True)
class Value:
    name: str
    tags: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    weak_tags: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Override:
    """A rule for two tags of one attribute on one character: `tag` wins over each of `over`
    (they become dissent), for the reason `why`. Posts with several characters never use it."""

    tag: str
    over: tuple[str, ...]
    why: str = ""


@dataclass(frozen=True)
class Attribute:
    key: str
    label: str
    multi: bool
    values: tuple[Value, ...]
    modifiers: tuple[str, ...] = ()
    seed_label: str | None = None  # the seed's output key, where it differs from `label`
    overrides: tuple[Override, ...] = ()
    mixed_value: str | None = None  # answered when counting tags state different values (1boy 1girl)

    @property
    def value_names(self) -> tuple[str, ...]:
        """Value names in vocabulary order, without `unknown`."""
        return tuple(v.name for v in self.values)

    def value(self, name: str) -> Value:
        for v in self.values:
            if v.name == name:
                return v
        raise KeyError(f"{self.key} has no value {name!r}")

    def index(self, name: str) -> int:
        return self.value_names.index(name)


@dataclass(frozen=True)
class TagHit:
    """What one tag says: `attribute` has `value`; `weak` when it only suggests it."""

    attribute: str
    value: str
    canonical_tag: str
    weak: bool = False


@dataclass(frozen=True)
class Vocabulary:
    attributes: tuple[Attribute, ...]
    prompt_templates: tuple[str, ...]
    single_character_tags: frozenset[str]
    multi_character_tags: frozenset[str]
    context_aliases: dict[str, str]
    fingerprint: str
    source: str
    tag_index: dict[str, tuple[TagHit, ...]] = field(repr=False, default_factory=dict)
    modifier_index: dict[str, str] = field(repr=False, default_factory=dict)
    # Danbooru tag implications: tag -> the tags it implies (`very_long_hair` -> `long_hair`).
    implications: dict[str, tuple[str, ...]] = field(repr=False, default_factory=dict)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.attributes)

    def attribute(self, key: str) -> Attribute:
        for a in self.attributes:
            if a.key == key:
                return a
        raise KeyError(f"unknown attribute {key!r}")

    def labels(self, seed: bool = False) -> dict[str, str]:
        """attribute key -> its output key ("hair_color" -> "Hair Color"); with `seed`, the seed's
        key where the vocabulary keeps one as an alias ("skin_tone" -> "Ethnicity")."""
        return {a.key: (a.seed_label or a.label) if seed else a.label for a in self.attributes}

    def allowed_values(self, key: str) -> frozenset[str]:
        return frozenset(self.attribute(key).value_names) | {UNKNOWN}


def _str_list(raw: object, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ConfigError(f"Vocabulary entry {where} must be a list of strings.")
    return tuple(raw)


# Columns of the output table that are not attributes; an attribute named like one of them, or
# like another attribute's confidence column, would overwrite it.
RESERVED_COLUMNS = frozenset({"image_id", "source_uri", "confidence", "strategy", "attribute_strategies", "evidence",
                              "versions", "notes"})
CONFIDENCE_SUFFIX = "_confidence"


def _check_attribute_key(key: str, attributes: dict, source: str) -> None:
    if key in RESERVED_COLUMNS:
        raise ConfigError(f"Vocabulary attribute {key!r} in {source} is named like the output column {key!r}; "
                          f"rename it (reserved names: {', '.join(sorted(RESERVED_COLUMNS))}).")
    if key.endswith(CONFIDENCE_SUFFIX) and key[: -len(CONFIDENCE_SUFFIX)] in attributes:
        raise ConfigError(f"Vocabulary attribute {key!r} in {source} is named like the confidence column of the "
                          f"attribute {key[: -len(CONFIDENCE_SUFFIX)]!r}; rename it.")


def _parse(data: dict, source: str) -> Vocabulary:
    raw_attrs = data.get("attributes")
    if not isinstance(raw_attrs, dict) or not raw_attrs:
        raise ConfigError(f"Vocabulary file {source} has no [attributes.*] tables.")
    attributes: list[Attribute] = []
    tag_index: dict[str, list[TagHit]] = {}
    modifier_index: dict[str, str] = {}
    for key, spec in raw_attrs.items():
        _check_attribute_key(key, raw_attrs, source)
        if not isinstance(spec, dict) or not isinstance(spec.get("values"), dict) or not spec["values"]:
            raise ConfigError(f"Vocabulary attribute {key!r} in {source} needs a [attributes.{key}.values.*] table.")
        values = []
        for name, vspec in spec["values"].items():
            if not isinstance(vspec, dict):
                raise ConfigError(f"Vocabulary value attributes.{key}.values.{name} in {source} must be a table "
                                  f"with tags and prompts, not {type(vspec).__name__} {vspec!r}.")
            if name == UNKNOWN:
                raise ConfigError(f"Vocabulary attribute {key!r} lists {UNKNOWN!r}, which is always allowed and must not be listed.")
            where = f"attributes.{key}.values.{name}"
            value = Value(
                name=name,
                tags=tuple(normalize_tag(t) for t in _str_list(vspec.get("tags"), where + ".tags")),
                aliases=tuple(normalize_tag(t) for t in _str_list(vspec.get("aliases"), where + ".aliases")),
                weak_tags=tuple(normalize_tag(t) for t in _str_list(vspec.get("weak_tags"), where + ".weak_tags")),
                prompts=_str_list(vspec.get("prompts"), where + ".prompts"),
            )
            if not value.prompts:
                raise ConfigError(f"Vocabulary value {where} needs at least one CLIP prompt.")
            values.append(value)
            for tag in value.tags + value.aliases:
                canonical = value.tags[0] if tag in value.aliases and value.tags else tag
                tag_index.setdefault(tag, []).append(TagHit(key, name, canonical))
            for tag in value.weak_tags:
                tag_index.setdefault(tag, []).append(TagHit(key, name, tag, weak=True))
        modifiers = tuple(normalize_tag(t) for t in _str_list(spec.get("modifiers"), f"attributes.{key}.modifiers"))
        for tag in modifiers:
            modifier_index[tag] = key
        attributes.append(
            Attribute(key=key, label=str(spec.get("label", key.replace("_", " ").title())),
                      multi=bool(spec.get("multi", False)), values=tuple(values), modifiers=modifiers,
                      seed_label=spec.get("seed_label"), overrides=_overrides(spec, key, source),
                      mixed_value=_mixed_value(spec, key, values, source))
        )
    prompts = data.get("prompts", {})
    if not isinstance(prompts, dict):
        raise ConfigError(f"Vocabulary entry prompts in {source} must be a table.")
    templates = _str_list(prompts.get("templates"), "prompts.templates") or ("{}",)
    for template in templates:
        try:
            ok = "{}" in template and template.format("x") is not None
        except (KeyError, IndexError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"Prompt template {template!r} in {source} must contain '{{}}' (where the value's prompt "
                              "goes) and no other {...} field.")
    context = data.get("context", {})
    if not isinstance(context, dict) or not isinstance(context.get("aliases", {}), dict):
        raise ConfigError(f"Vocabulary entry context in {source} must be a table, its aliases a table of strings.")
    # The fingerprint covers meaning, not formatting: reordering keys or comments keeps it.
    fingerprint = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return Vocabulary(
        attributes=tuple(attributes),
        prompt_templates=templates,
        single_character_tags=frozenset(normalize_tag(t) for t in _str_list(context.get("single_character"), "context.single_character")),
        multi_character_tags=frozenset(normalize_tag(t) for t in _str_list(context.get("multi_character"), "context.multi_character")),
        context_aliases={normalize_tag(k): normalize_tag(v) for k, v in dict(context.get("aliases", {})).items()},
        fingerprint=fingerprint,
        source=source,
        tag_index={k: tuple(v) for k, v in tag_index.items()},
        modifier_index=modifier_index,
        implications=_implications(data.get("implications", {}), source),
    )


def _implications(raw: object, source: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"Vocabulary file {source}: [implications] must map a tag to the list of tags it implies.")
    return {normalize_tag(tag): tuple(normalize_tag(t) for t in _str_list(implied, f"implications.{tag}"))
            for tag, implied in raw.items()}


def _overrides(spec: dict, key: str, source: str) -> tuple[Override, ...]:
    raw = spec.get("overrides", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) and isinstance(r.get("tag"), str) for r in raw):
        raise ConfigError(f"Vocabulary attribute {key!r} in {source}: each [[attributes.{key}.overrides]] needs a tag.")
    return tuple(Override(tag=normalize_tag(r["tag"]), why=str(r.get("why", "")),
                          over=tuple(normalize_tag(t) for t in _str_list(r.get("over"), f"attributes.{key}.overrides.over")))
                 for r in raw)


def _mixed_value(spec: dict, key: str, values: list[Value], source: str) -> str | None:
    mixed = spec.get("mixed_value")
    if mixed is not None and mixed not in {v.name for v in values}:
        raise ConfigError(f"Vocabulary attribute {key!r} in {source}: mixed_value {mixed!r} is not one of its values.")
    return mixed


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> Vocabulary:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Vocabulary file {path} does not exist.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Vocabulary file {path} is not valid TOML ({exc}).") from None
    return _parse(data, str(p))


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """Load (and cache) a vocabulary file; None means the bundled default."""
    return _load_cached(str(Path(path or DEFAULT_VOCABULARY_PATH).resolve()))


def iter_prompts(attribute: Attribute, value: Value, templates: Iterable[str]) -> list[str]:
    """The prompt ensemble of one value: every prompt through every template."""
    return [t.format(p) for p in value.prompts for t in templates]
