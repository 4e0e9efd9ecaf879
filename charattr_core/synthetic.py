"""Synthetic sample data: drawn characters with known attributes and noisy Danbooru-style tags.

This is the project's bundled sample (the demo job runs on it) and the ground truth for tests and
for evaluating the fusion policy. Each image is a procedurally drawn character
(`synthetic_draw.render`) whose attribute values are known exactly; its sidecar tags are derived
from those values and then damaged the way real tags are (`TagNoise`): tags go missing, some are
wrong, some are spelled as aliases, unrelated tags are added, and some images have no tags at all.

Everything is deterministic by seed: image `i` of seed `s` is drawn from its own random streams
(one for the picture, one for its tags), so it is the same picture, byte for byte, whatever the
number of images or shards, and the same in the folder and the Parquet layout.

Layouts written:
- folder: `out/shard_000/char_00000.png` + `char_00000.txt` (sidecar, when the image has tags)
- Parquet (Hugging Face `datasets` layout): `out/train-00000-of-00004.parquet` with columns
  `image` (struct {bytes, path}) and `tags` (string, null when the image has no tags)
Both add `ground_truth.jsonl` (one row per image: file, image_id = content hash of the PNG bytes,
truth, clean and noisy tags), `dataset.json` (seed, noise, which attributes are drawn) and
`README.txt`.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from PIL import Image

from .errors import ConfigError
from .schema import Attribute, Value, Vocabulary, load_vocabulary
from .sources.hashing import content_hash
from .synthetic_draw import (CUES, DRAWABLE, HAIR_SHAPES, CharacterSpec, Variation, render,
                             sample_variation)

GENERATOR = "charattr_core.synthetic"
GENERATOR_VERSION = 2  # bump when the same seed would draw different pictures or tags (2: vocabulary of issue 13)
# The random streams are named by their own version: a generator change that alters some pictures
# (2: the "uniform" outfit split into maid and military uniform) keeps every other picture as it was.
STREAM_VERSION = 1
GROUND_TRUTH_FILE = "ground_truth.jsonl"
METADATA_FILE = "dataset.json"
README_FILE = "README.txt"

# Real, frequent Danbooru tags that say nothing about the attributes: the "extra" noise.
EXTRA_TAGS = ("solo", "simple_background", "looking_at_viewer", "upper_body", "portrait", "bangs", "sidelocks",
              "hair_between_eyes", "highres", "absurdres", "commentary_request")
# Preferred modifier tag when an attribute has several values (else the attribute's first modifier).
PREFERRED_MODIFIERS = {"hair_color": "multicolored_hair", "eye_color": "heterochromia"}

# -- sampling priors: roughly Danbooru-like, but every value is common enough to learn ----------------
_WEIGHTS: dict[str, dict[str, float]] = {
    "gender": {"female": 0.62, "male": 0.3, "ambiguous": 0.08},
    "age": {"child": 0.1, "teen": 0.4, "young_adult": 0.22, "adult": 0.14, "middle_aged": 0.07, "elderly": 0.07},
    "skin_tone": {"pale": 0.2, "fair": 0.45, "tan": 0.14, "dark": 0.13, "colored": 0.08},
    "body_type": {"petite": 0.25, "average": 0.35, "athletic": 0.15, "curvy": 0.15, "plump": 0.1},
    "hair_length": {"bald": 0.01, "very_short": 0.05, "short": 0.22, "medium": 0.25, "long": 0.3, "very_long": 0.17},
    "hair_color": {"black": 0.14, "brown": 0.14, "blonde": 0.12, "red": 0.07, "orange": 0.06, "pink": 0.08,
                   "purple": 0.07, "blue": 0.08, "aqua": 0.05, "green": 0.05, "grey": 0.06, "white": 0.08},
    "hair_style": {"straight": 0.45, "wavy": 0.18, "curly": 0.1, "spiky": 0.12, "messy": 0.15},
    "clothing": {"school_uniform": 0.2, "dress": 0.14, "casual": 0.18, "formal": 0.1, "japanese_traditional": 0.09,
                 "swimsuit": 0.08, "maid": 0.04, "military_uniform": 0.04, "armor": 0.06, "sleepwear": 0.07},
    "expression": {"happy": 0.3, "neutral": 0.2, "sad": 0.1, "angry": 0.1, "surprised": 0.1, "embarrassed": 0.1,
                   "smug": 0.1},
}
_MALE_HAIR_LENGTH = {"bald": 0.04, "very_short": 0.2, "short": 0.5, "medium": 0.16, "long": 0.07, "very_long": 0.03}
_MALE_CLOTHING = {"dress": 0.01}
_ELDERLY_HAIR = {"grey": 0.5, "white": 0.4}
_SHAPES_BY_LENGTH = {
    "very_short": (), "short": ("bob_cut",),
    "medium": ("bob_cut", "ponytail", "side_ponytail", "twintails", "braid", "bun"),
    "long": ("ponytail", "side_ponytail", "twintails", "braid", "bun", "drills"),
    "very_long": ("ponytail", "side_ponytail", "twintails", "braid", "bun", "drills"),
}
_TEXTURES_BY_LENGTH = {
    "very_short": ("straight", "spiky", "messy"), "short": ("straight", "wavy", "curly", "spiky", "messy"),
    "medium": ("straight", "wavy", "curly", "spiky", "messy"), "long": ("straight", "wavy", "curly", "messy"),
    "very_long": ("straight", "wavy", "curly", "messy"),
}
_PLAIN_SHAPES = ("drills", "braid", "bob_cut")  # drawn with straight hair only
_SHAPE_RATE = {"female": 0.55, "ambiguous": 0.3, "male": 0.12}
MULTICOLOR_RATE = 0.15
HETEROCHROMIA_RATE = 0.08
_ACCESSORY_RATES = {"glasses": 0.12, "hat": 0.11, "hair_ribbon": 0.14, "hair_ornament": 0.14, "hairband": 0.09,
                    "earrings": 0.1, "necklace": 0.08, "choker": 0.08, "headphones": 0.07, "mask": 0.05,
                    "scarf": 0.07}
_EXCLUSIVE_ACCESSORIES = (frozenset({"hat", "headphones", "hairband"}), frozenset({"scarf", "choker", "necklace"}))
_NEEDS_HAIR = frozenset({"hair_ribbon", "hair_ornament"})


# -- public types -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagNoise:
    """How sidecar tags differ from the truth.

    Per attribute tag, exclusive events: dropped (`missing`), replaced by a tag of a wrong value
    (`wrong`), written as an alias of the right value (`alias`; values without aliases keep their
    tag). Each tag of `EXTRA_TAGS` is added with probability `extra`. A fraction `no_tags` of
    images gets no sidecar at all.
    """

    missing: float = 0.3
    wrong: float = 0.1
    alias: float = 0.1
    extra: float = 0.2
    no_tags: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            rate = getattr(self, f.name)
            if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                raise ConfigError(f"Tag noise rate {f.name} must be a number between 0 and 1 (got {rate!r}).")
        if self.missing + self.wrong + self.alias > 1.0 + 1e-9:
            raise ConfigError(f"Tag noise rates missing + wrong + alias must add up to at most 1 (got "
                              f"{self.missing} + {self.wrong} + {self.alias}).")

    @classmethod
    def clean(cls) -> "TagNoise":
        """No noise: every image has a sidecar with exactly its clean tags."""
        return cls(missing=0.0, wrong=0.0, alias=0.0, extra=0.0, no_tags=0.0)


@dataclass(frozen=True)
class SyntheticCharacter:
    """One drawn character: the picture, its ground truth and its clean (noise-free) tags."""

    image: Image.Image
    truth: dict[str, list[str]]  # attribute -> values; absent when not applicable (a bald head's hair colour)
    tags: list[str]
    spec: CharacterSpec
    variation: Variation


@dataclass(frozen=True)
class DemoDatasetInfo:
    """What `write_demo_dataset` / `write_demo_parquet` wrote."""

    out_dir: Path
    layout: str  # "folder" or "parquet"
    n_images: int
    n_shards: int
    n_with_tags: int  # images that have tags (a sidecar, or a non-null tags cell)
    seed: int
    size: int
    noise: TagNoise
    shards: tuple[Path, ...]  # shard folders, or Parquet files
    ground_truth_path: Path
    metadata_path: Path


# -- vocabulary helpers -------------------------------------------------------------------------------


def _vocab_values(vocabulary: Vocabulary, key: str) -> tuple[str, ...]:
    return vocabulary.attribute(key).value_names if key in vocabulary.keys else ()


def _domain(vocabulary: Vocabulary, key: str) -> tuple[str, ...]:
    """Values of `key` to sample: the drawable ones the vocabulary has, else all drawable ones
    (the picture still needs a value; the truth then leaves the attribute out)."""
    known = set(_vocab_values(vocabulary, key))
    return tuple(v for v in DRAWABLE[key] if v in known) or DRAWABLE[key]


def drawn_attributes(vocabulary: Vocabulary) -> tuple[str, ...]:
    """Attributes of `vocabulary` that the pictures show (the others are labels in the tags only)."""
    return tuple(a.key for a in vocabulary.attributes
                 if a.key in DRAWABLE and set(DRAWABLE[a.key]) & set(a.value_names))


def undrawn_values(vocabulary: Vocabulary) -> dict[str, list[str]]:
    """Values of drawn attributes that the generator never uses (it cannot draw them)."""
    out = {}
    for key in drawn_attributes(vocabulary):
        missing = [v for v in vocabulary.attribute(key).value_names if v not in DRAWABLE[key]]
        if missing:
            out[key] = missing
    return out


# -- sampling -----------------------------------------------------------------------------------------


def _pick(rng: random.Random, key: str, choices: Sequence[str], boost: Mapping[str, float] | None = None) -> str:
    weights = {**_WEIGHTS.get(key, {}), **(boost or {})}
    return rng.choices(list(choices), weights=[weights.get(c, 0.1) for c in choices])[0]


def sample_spec(rng: random.Random, vocabulary: Vocabulary | None = None) -> CharacterSpec:
    """Draw the attribute values of one character (cheap: nothing is drawn)."""
    vocabulary = vocabulary or load_vocabulary()
    dom = {key: _domain(vocabulary, key) for key in DRAWABLE}
    gender = _pick(rng, "gender", dom["gender"])
    age = _pick(rng, "age", dom["age"])
    skin_tone = _pick(rng, "skin_tone", dom["skin_tone"])
    body_type = _pick(rng, "body_type", dom["body_type"])
    length = _pick(rng, "hair_length", dom["hair_length"], _MALE_HAIR_LENGTH if gender == "male" else None)
    hair_color: tuple[str, ...] = ()
    hair_style: tuple[str, ...] = ()
    if length != "bald":
        first = _pick(rng, "hair_color", dom["hair_color"], _ELDERLY_HAIR if age == "elderly" else None)
        others = [c for c in dom["hair_color"] if c != first]
        two_tone = others and rng.random() < MULTICOLOR_RATE
        hair_color = (first, _pick(rng, "hair_color", others)) if two_tone else (first,)
        shapes = [s for s in _SHAPES_BY_LENGTH[length] if s in dom["hair_style"]]
        shape = rng.choice(shapes) if shapes and rng.random() < _SHAPE_RATE[gender] else None
        textures = [t for t in _TEXTURES_BY_LENGTH[length] if t in dom["hair_style"]] or ["straight"]
        texture = "straight" if shape in _PLAIN_SHAPES else _pick(rng, "hair_style", textures)
        # A shape alone means straight hair; "straight" is only named when nothing else is.
        hair_style = tuple(s for s in (shape, texture) if s and (s != "straight" or shape is None))
    left = _pick(rng, "eye_color", dom["eye_color"])
    others = [c for c in dom["eye_color"] if c != left]
    eye_color = (left, rng.choice(others)) if others and rng.random() < HETEROCHROMIA_RATE else (left,)
    clothing = _pick(rng, "clothing", dom["clothing"], _MALE_CLOTHING if gender == "male" else None)
    expression = _pick(rng, "expression", dom["expression"])
    accessories: list[str] = []
    for item in dom["accessories"]:
        if rng.random() >= _ACCESSORY_RATES.get(item, 0.08):
            continue
        clash = any(item in group and group & set(accessories) for group in _EXCLUSIVE_ACCESSORIES)
        if clash or (item in _NEEDS_HAIR and length == "bald") or (item == "hat" and "bun" in hair_style):
            continue
        accessories.append(item)
    return CharacterSpec(age=age, gender=gender, skin_tone=skin_tone, hair_color=hair_color, hair_length=length,
                         hair_style=hair_style, eye_color=eye_color, body_type=body_type, clothing=clothing,
                         expression=expression, accessories=tuple(accessories))


def truth_of(spec: CharacterSpec, vocabulary: Vocabulary, rng: random.Random) -> dict[str, list[str]]:
    """The ground truth of a character, in vocabulary order.

    Drawn attributes come from `spec` (left out when the vocabulary lacks the attribute or a
    drawn value). Attributes the generator cannot draw get a random value: labels, not pixels.
    """
    drawn = spec.values()
    truth: dict[str, list[str]] = {}
    for attribute in vocabulary.attributes:
        if attribute.key in DRAWABLE:
            values = drawn.get(attribute.key)
            if values is not None and set(values) <= set(attribute.value_names):
                truth[attribute.key] = values
        else:
            truth[attribute.key] = [rng.choice(attribute.value_names)]
    return truth


def generate_character(rng: random.Random, vocabulary: Vocabulary | None = None, size: int = 256) -> SyntheticCharacter:
    """Draw one random character with its ground truth and clean tags."""
    vocabulary = vocabulary or load_vocabulary()
    variation = sample_variation(rng)
    spec = sample_spec(rng, vocabulary)
    truth = truth_of(spec, vocabulary, rng)
    return SyntheticCharacter(image=render(spec, variation, size), truth=truth, tags=clean_tags(truth, vocabulary),
                              spec=spec, variation=variation)


# -- tags ---------------------------------------------------------------------------------------------

_GENDER_WORDS = {"female": frozenset({"female", "woman", "lady", "girl"}), "male": frozenset({"male", "man", "boy"})}


def _tag_for(value: Value, gender: str | None) -> str | None:
    """The value's tag for a character of `gender`: its first tag that does not name another
    gender (`mature_male` for a man, not `mature_female`)."""
    wrong_words = set().union(*(words for g, words in _GENDER_WORDS.items() if g != gender))
    for tag in value.tags:
        if not wrong_words & set(re.split(r"[_\-]", tag)):
            return tag
    return value.tags[0] if value.tags else None


def _modifier(attribute: Attribute) -> str | None:
    preferred = PREFERRED_MODIFIERS.get(attribute.key)
    if preferred in attribute.modifiers:
        return preferred
    return attribute.modifiers[0] if attribute.modifiers else None


def _gender(truth: Mapping[str, Sequence[str]]) -> str | None:
    values = truth.get("gender") or [None]
    return values[0]


def clean_tags(truth: Mapping[str, Sequence[str]], vocabulary: Vocabulary) -> list[str]:
    """The tags a careful tagger would write for `truth`: one per value, plus modifier tags
    (`multicolored_hair`, `heterochromia`) for attributes with several values."""
    return noisy_tags(truth, random.Random(0), vocabulary, TagNoise.clean())


def extra_tag_pool(vocabulary: Vocabulary) -> tuple[str, ...]:
    """`EXTRA_TAGS` minus any that the vocabulary reads as attribute evidence."""
    return tuple(t for t in EXTRA_TAGS if t not in vocabulary.tag_index and t not in vocabulary.modifier_index
                 and t not in vocabulary.multi_character_tags)


def noisy_tags(truth: Mapping[str, Sequence[str]], rng: random.Random, vocabulary: Vocabulary,
               noise: TagNoise) -> list[str]:
    """Danbooru-style tags for `truth`, damaged by `noise` (see `TagNoise`), without duplicates."""
    gender = _gender(truth)
    tags: list[str] = []
    for attribute in vocabulary.attributes:
        values = [v for v in truth.get(attribute.key, ()) if v in attribute.value_names]
        for name in values:
            value = attribute.value(name)
            u = rng.random()
            if u < noise.missing:
                continue
            tag = _tag_for(value, gender)
            if u < noise.missing + noise.wrong:
                wrong = [v for v in attribute.values if v.name not in values and v.tags]
                if wrong:
                    tag = _tag_for(rng.choice(wrong), gender)
            elif u < noise.missing + noise.wrong + noise.alias and value.aliases:
                tag = rng.choice(value.aliases)
            if tag:
                tags.append(tag)
        modifier = _modifier(attribute)
        if len(values) > 1 and modifier and rng.random() >= noise.missing:
            tags.append(modifier)
    tags += [t for t in extra_tag_pool(vocabulary) if rng.random() < noise.extra]
    return list(dict.fromkeys(tags))


def sidecar_tags(truth: Mapping[str, Sequence[str]], rng: random.Random, vocabulary: Vocabulary,
                 noise: TagNoise) -> list[str] | None:
    """The tags an image ships with: None (no tags at all) with probability `noise.no_tags`."""
    if rng.random() < noise.no_tags:
        return None
    return noisy_tags(truth, rng, vocabulary, noise)


def format_tags(tags: Sequence[str], rng: random.Random) -> str:
    """A tag string as users write them: Danbooru's space-separated `long_hair` (sorted, as
    Danbooru lists them) or a caption's comma-separated `long hair` (in any order)."""
    if rng.random() < 0.5:
        return " ".join(sorted(tags))
    shuffled = list(tags)
    rng.shuffle(shuffled)
    return ", ".join(t.replace("_", " ") for t in shuffled)


# -- one image of a demo dataset ------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoItem:
    """One image of the demo data, encoded, with its truth and tags (None: the image has none)."""

    index: int
    png: bytes
    image_id: str
    truth: dict[str, list[str]]
    clean_tags: list[str]
    noisy_tags: list[str] | None
    tags_text: str | None


def _rngs(seed: int, index: int) -> tuple[random.Random, random.Random]:
    """Independent streams for image `index`: the picture, and its tags (so changing the noise
    never changes a picture). String seeds are hashed with SHA-512: stable across runs."""
    base = f"{GENERATOR}/{STREAM_VERSION}/{seed}/{index}"
    return random.Random(base + "/picture"), random.Random(base + "/tags")


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes that depend on the pixels only (no timestamps or text chunks)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)  # fast; files are small anyway
    return buffer.getvalue()


def _demo_item(seed: int, index: int, vocabulary: Vocabulary, noise: TagNoise, size: int) -> DemoItem:
    picture_rng, tags_rng = _rngs(seed, index)
    character = generate_character(picture_rng, vocabulary, size)
    png = encode_png(character.image)
    tags = sidecar_tags(character.truth, tags_rng, vocabulary, noise)
    return DemoItem(index=index, png=png, image_id=content_hash(png), truth=character.truth,
                     clean_tags=character.tags, noisy_tags=tags,
                     tags_text=None if tags is None else format_tags(tags, tags_rng))


def iter_demo_items(n_images: int, seed: int = 0, noise: TagNoise = TagNoise(), size: int = 256,
                    vocabulary: Vocabulary | None = None, start: int = 0) -> Iterator[DemoItem]:
    """The images `start .. start + n_images - 1` of the demo data of `seed`, one at a time."""
    vocabulary = vocabulary or load_vocabulary()
    for index in range(start, start + n_images):
        yield _demo_item(seed, index, vocabulary, noise, size)


# -- writers ------------------------------------------------------------------------------------------

_STALE_FOLDER_SHARD = re.compile(r"shard_\d+")
_STALE_FOLDER_FILE = re.compile(r"char_\d+\.(png|txt)")
_STALE_PARQUET_FILE = re.compile(r"train-\d+-of-\d+\.parquet")


def _check_arguments(n_images: int, n_shards: int, size: int, noise: TagNoise) -> None:
    if not isinstance(n_images, int) or n_images < 1:
        raise ConfigError(f"The demo dataset needs at least 1 image (got n_images={n_images!r}).")
    if not isinstance(n_shards, int) or not 1 <= n_shards <= n_images:
        raise ConfigError(f"n_shards must be between 1 and the number of images {n_images} (got {n_shards!r}).")
    if not isinstance(size, int) or size < 32:
        raise ConfigError(f"The image size must be at least 32 pixels (got {size!r}).")
    if not isinstance(noise, TagNoise):
        raise ConfigError(f"noise must be a TagNoise (got {type(noise).__name__}).")


def _prepare_out_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"Output path {out} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    # Remove what an earlier run wrote (and only that, by name), so a smaller re-run leaves no
    # stale images behind for the readers to pick up.
    for entry in out.iterdir():
        if entry.is_file() and _STALE_PARQUET_FILE.fullmatch(entry.name):
            entry.unlink()
        elif entry.is_dir() and not entry.is_symlink() and _STALE_FOLDER_SHARD.fullmatch(entry.name):
            for f in entry.iterdir():
                if f.is_file() and _STALE_FOLDER_FILE.fullmatch(f.name):
                    f.unlink()
            if not any(entry.iterdir()):
                entry.rmdir()
    return out


def _shard_ranges(n_images: int, n_shards: int) -> list[range]:
    """Contiguous, near-equal blocks of image indices, one per shard."""
    return [range(k * n_images // n_shards, (k + 1) * n_images // n_shards) for k in range(n_shards)]


def _metadata(layout: str, n_images: int, n_shards: int, seed: int, size: int, noise: TagNoise,
              vocabulary: Vocabulary, n_with_tags: int | None) -> dict[str, Any]:
    drawn = drawn_attributes(vocabulary)
    return {
        "generator": GENERATOR, "generator_version": GENERATOR_VERSION, "layout": layout,
        "complete": n_with_tags is not None, "n_images": n_images, "n_shards": n_shards,
        "n_with_tags": n_with_tags, "seed": seed, "size": size, "noise": asdict(noise),
        "vocabulary_fingerprint": vocabulary.fingerprint,
        "drawn_attributes": list(drawn),
        "label_only_attributes": [k for k in vocabulary.keys if k not in drawn],
        "undrawn_values": undrawn_values(vocabulary),
        "cues": {k: CUES[k] for k in drawn},
        "ground_truth": GROUND_TRUTH_FILE,
    }


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _readme(meta: Mapping[str, Any]) -> str:
    noise = meta["noise"]
    files = ("shard_NNN/char_NNNNN.png with a sidecar char_NNNNN.txt when the image has tags"
             if meta["layout"] == "folder" else
             "train-NNNNN-of-NNNNN.parquet, columns image {bytes, path} and tags (null: no tags)")
    return (
        "charattr synthetic demo data\n"
        "=============================\n\n"
        f"{meta['n_images']} procedurally drawn characters ({meta['size']}x{meta['size']} PNG) in "
        f"{meta['n_shards']} shards, seed {meta['seed']}, written by {GENERATOR} v{GENERATOR_VERSION}.\n"
        f"Files: {files}.\n\n"
        "Every attribute value is known: ground_truth.jsonl has one row per image with its image_id (xxh3-128 of "
        "the PNG bytes), truth (attribute -> values), clean_tags and noisy_tags (null: no tags).\n"
        f"Drawn attributes: {', '.join(meta['drawn_attributes'])}.\n"
        "Label-only attributes (in the tags, not in the pixels): "
        f"{', '.join(meta['label_only_attributes']) or 'none'}.\n\n"
        f"Tag noise: each attribute tag is dropped with p={noise['missing']}, replaced by a wrong value's tag with "
        f"p={noise['wrong']}, written as an alias with p={noise['alias']}; each of {len(EXTRA_TAGS)} unrelated tags "
        f"is added with p={noise['extra']}; a fraction {noise['no_tags']} of images has no tags at all. Tag strings "
        "are either space-separated with underscores (Danbooru) or comma-separated with spaces (captions).\n"
        "Regenerate with: charattr demo-data DIR (same seed, same bytes).\n"
    )


def _truth_row(item: DemoItem, **where: Any) -> str:
    row = {**where, "image_id": item.image_id, "truth": item.truth, "clean_tags": item.clean_tags,
           "noisy_tags": item.noisy_tags, "tags_text": item.tags_text}
    return json.dumps(row, ensure_ascii=False)


class _DatasetWriter:
    """The parts both layouts share: the output folder, metadata first (marked incomplete), the
    ground truth written under a temporary name, and both finalised at the end."""

    def __init__(self, out_dir: str | Path, layout: str, n_images: int, n_shards: int, seed: int, size: int,
                 noise: TagNoise, vocabulary: Vocabulary) -> None:
        _check_arguments(n_images, n_shards, size, noise)
        self.out = _prepare_out_dir(out_dir)
        self.layout, self.n_images, self.n_shards = layout, n_images, n_shards
        self.seed, self.size, self.noise, self.vocabulary = seed, size, noise, vocabulary
        self.meta_path = self.out / METADATA_FILE
        self.truth_path = self.out / GROUND_TRUTH_FILE
        _write_json(self.meta_path, self._metadata(n_with_tags=None))
        self._tmp = self.truth_path.with_name(self.truth_path.name + ".tmp")
        self.truth_file = self._tmp.open("w", encoding="utf-8")
        self.n_with_tags = 0

    def _metadata(self, n_with_tags: int | None) -> dict[str, Any]:
        return _metadata(self.layout, self.n_images, self.n_shards, self.seed, self.size, self.noise,
                         self.vocabulary, n_with_tags)

    def add(self, item: DemoItem, **where: Any) -> None:
        self.truth_file.write(_truth_row(item, **where) + "\n")
        self.n_with_tags += item.noisy_tags is not None

    def finish(self, shards: Sequence[Path]) -> DemoDatasetInfo:
        self.truth_file.close()
        os.replace(self._tmp, self.truth_path)
        meta = self._metadata(n_with_tags=self.n_with_tags)
        _write_json(self.meta_path, meta)
        (self.out / README_FILE).write_text(_readme(meta), encoding="utf-8")
        return DemoDatasetInfo(out_dir=self.out, layout=self.layout, n_images=self.n_images, n_shards=self.n_shards,
                               n_with_tags=self.n_with_tags, seed=self.seed, size=self.size, noise=self.noise,
                               shards=tuple(shards), ground_truth_path=self.truth_path, metadata_path=self.meta_path)

    def abort(self) -> None:
        self.truth_file.close()
        self._tmp.unlink(missing_ok=True)


def write_demo_dataset(out_dir: str | Path, n_images: int = 200, n_shards: int = 4, seed: int = 0,
                       noise: TagNoise = TagNoise(), size: int = 256, *,
                       vocabulary: Vocabulary | None = None) -> DemoDatasetInfo:
    """Write the demo data as a folder of shards with sidecar tags, streaming one image at a time.

    Files written by an earlier run into `out_dir` (recognised by name) are replaced; other
    files are left alone.
    """
    vocabulary = vocabulary or load_vocabulary()
    writer = _DatasetWriter(out_dir, "folder", n_images, n_shards, seed, size, noise, vocabulary)
    shard_width, name_width = max(3, len(str(n_shards - 1))), max(5, len(str(n_images - 1)))
    shards = []
    try:
        for k, indices in enumerate(_shard_ranges(n_images, n_shards)):
            shard = f"shard_{k:0{shard_width}d}"
            (writer.out / shard).mkdir(exist_ok=True)
            shards.append(writer.out / shard)
            for item in iter_demo_items(len(indices), seed, noise, size, vocabulary, start=indices.start):
                stem = f"{shard}/char_{item.index:0{name_width}d}"
                (writer.out / f"{stem}.png").write_bytes(item.png)
                if item.tags_text is not None:
                    (writer.out / f"{stem}.txt").write_text(item.tags_text + "\n", encoding="utf-8")
                writer.add(item, file=f"{stem}.png", shard=shard, index=item.index,
                           sidecar=None if item.tags_text is None else f"{stem}.txt")
    except BaseException:
        writer.abort()
        raise
    return writer.finish(shards)


def _hf_features() -> bytes:
    """Schema metadata that makes `datasets` read the image column as `datasets.Image`."""
    features = {"image": {"_type": "Image"}, "tags": {"dtype": "string", "_type": "Value"}}
    return json.dumps({"info": {"features": features}}).encode()


def write_demo_parquet(out_dir: str | Path, n_images: int = 200, n_shards: int = 4, seed: int = 0,
                       noise: TagNoise = TagNoise(), size: int = 256, *, vocabulary: Vocabulary | None = None,
                       row_group_size: int = 64) -> DemoDatasetInfo:
    """Write the same demo data in the Hugging Face Parquet layout (`train-0000k-of-0000n.parquet`),
    one row group of `row_group_size` images at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if row_group_size < 1:
        raise ConfigError(f"row_group_size must be at least 1 (got {row_group_size}).")
    vocabulary = vocabulary or load_vocabulary()
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("tags", pa.string())], metadata={b"huggingface": _hf_features()})
    writer = _DatasetWriter(out_dir, "parquet", n_images, n_shards, seed, size, noise, vocabulary)
    name_width = max(5, len(str(n_images - 1)))
    files = []
    try:
        for k, indices in enumerate(_shard_ranges(n_images, n_shards)):
            path = writer.out / f"train-{k:05d}-of-{n_shards:05d}.parquet"
            tmp = path.with_name(path.name + ".tmp")
            images: list[dict[str, Any]] = []
            tags: list[str | None] = []
            with pq.ParquetWriter(tmp, schema) as parquet:
                for row, item in enumerate(iter_demo_items(len(indices), seed, noise, size, vocabulary,
                                                           start=indices.start)):
                    name = f"char_{item.index:0{name_width}d}.png"
                    images.append({"bytes": item.png, "path": name})
                    tags.append(item.tags_text)
                    writer.add(item, file=path.name, row=row, path=name, index=item.index)
                    if len(images) == row_group_size:
                        parquet.write_table(pa.table({"image": images, "tags": tags}, schema=schema))
                        images, tags = [], []
                if images:
                    parquet.write_table(pa.table({"image": images, "tags": tags}, schema=schema))
            os.replace(tmp, path)
            files.append(path)
    except BaseException:
        writer.abort()
        raise
    return writer.finish(files)


# -- reading the ground truth -----------------------------------------------------------------------------


def iter_ground_truth(path: str | Path) -> Iterator[dict[str, Any]]:
    """The rows of a `ground_truth.jsonl` (or of the one in the dataset folder `path`), streamed."""
    p = Path(path)
    if p.is_dir():
        p = p / GROUND_TRUTH_FILE
    if not p.is_file():
        raise ConfigError(f"Ground truth file {p} does not exist; write the demo data with `charattr demo-data DIR`.")
    with p.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"Ground truth file {p} line {number} is not valid JSON ({exc.msg}).") from None
            if not (isinstance(row, dict) and isinstance(row.get("image_id"), str)
                    and isinstance(row.get("truth"), dict)):
                raise ConfigError(f"Ground truth file {p} line {number} lacks an image_id string or a truth object.")
            yield row


def load_ground_truth(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """image_id -> attribute -> true values, from a demo dataset's ground truth."""
    return {row["image_id"]: {k: list(v) for k, v in row["truth"].items()} for row in iter_ground_truth(path)}


__all__ = [
    "DemoDatasetInfo", "DemoItem", "SyntheticCharacter", "TagNoise", "CharacterSpec", "Variation", "EXTRA_TAGS",
    "clean_tags", "drawn_attributes", "encode_png", "extra_tag_pool", "format_tags", "generate_character",
    "iter_demo_items", "iter_ground_truth", "load_ground_truth", "noisy_tags", "sample_spec", "sidecar_tags",
    "truth_of", "undrawn_values", "write_demo_dataset", "write_demo_parquet", "HAIR_SHAPES",
]
