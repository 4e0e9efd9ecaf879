"""Tests for charattr_core.synthetic (+ synthetic_draw): the bundled sample data and ground truth."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import struct
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from charattr_core.errors import ConfigError
from charattr_core.schema import load_vocabulary, normalize_tag
from charattr_core.sources.hashing import content_hash
from charattr_core.synthetic import (
    EXTRA_TAGS, TagNoise, clean_tags, drawn_attributes, encode_png, extra_tag_pool, format_tags, generate_character,
    iter_demo_items, load_ground_truth, noisy_tags, sample_spec, sidecar_tags, truth_of, undrawn_values,
    write_demo_dataset, write_demo_parquet,
)
from charattr_core.synthetic_draw import (
    COLORED_SKIN_RGB, DRAWABLE, EYE_RGB, HAIR_RGB, SKIN_RGB, CharacterSpec, render, sample_variation,
)

VOCAB = load_vocabulary()
SINGLE_VALUED = [a.key for a in VOCAB.attributes if not a.multi]

BASE = CharacterSpec(age="teen", gender="female", skin_tone="fair", hair_color=("pink",), hair_length="medium",
                     hair_style=("straight",), eye_color=("blue",), body_type="average", clothing="casual",
                     expression="neutral")


def _variation(seed: int = 7):
    """A fixed variation without rotation, so pixel positions are comparable across renders."""
    return dataclasses.replace(sample_variation(random.Random(seed)), tilt=0.0)


def _pixels(spec: CharacterSpec, size: int = 128, seed: int = 7) -> np.ndarray:
    return np.asarray(render(spec, _variation(seed), size), dtype=np.int16)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def _dominant(pixels: np.ndarray, mask: np.ndarray) -> tuple[int, ...]:
    colours, counts = np.unique(pixels[mask].reshape(-1, 3), axis=0, return_counts=True)
    return tuple(int(c) for c in colours[counts.argmax()])


def _with_value(key: str, value: str) -> CharacterSpec:
    if key == "hair_length" and value == "bald":
        return dataclasses.replace(BASE, hair_length="bald", hair_color=(), hair_style=())
    current = getattr(BASE, key)
    return dataclasses.replace(BASE, **{key: (value,) if isinstance(current, tuple) else value})


def _read_back(tags: list[str]) -> dict[str, set[str]]:
    """attribute -> values that the tags state (strong evidence only), through the vocabulary."""
    read: dict[str, set[str]] = {}
    for tag in tags:
        for hit in VOCAB.tag_index.get(normalize_tag(tag), ()):
            if not hit.weak:
                read.setdefault(hit.attribute, set()).add(hit.value)
    return read


def _truths(n: int, seed: int) -> list[dict[str, list[str]]]:
    rng = random.Random(seed)
    return [truth_of(sample_spec(rng, VOCAB), VOCAB, rng) for _ in range(n)]


# -- determinism ---------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_truth_and_tags_and_another_seed_does_not():
    first = list(iter_demo_items(5, seed=3, size=96))
    again = list(iter_demo_items(5, seed=3, size=96))
    other = list(iter_demo_items(5, seed=4, size=96))
    assert [i.png for i in first] == [i.png for i in again]
    def described(items):
        return [(i.truth, i.noisy_tags, i.tags_text) for i in items]

    assert described(first) == described(again)
    assert not {i.image_id for i in first} & {i.image_id for i in other}
    assert [i.truth for i in first] != [i.truth for i in other]


def test_a_picture_does_not_depend_on_the_noise_or_on_which_images_are_written_with_it():
    alone = next(iter_demo_items(1, seed=1, size=96, start=4))
    among = list(iter_demo_items(5, seed=1, size=96, noise=TagNoise.clean()))[4]
    assert alone.png == among.png and alone.truth == among.truth
    assert among.noisy_tags == among.clean_tags  # clean noise: exactly the clean tags


def test_png_bytes_carry_no_metadata_chunks():
    png = encode_png(generate_character(random.Random(0), VOCAB, size=64).image)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        chunks.append(png[pos + 4:pos + 8].decode())
        pos += 12 + length
    assert set(chunks) == {"IHDR", "IDAT", "IEND"}  # no tEXt/tIME: bytes depend on pixels only


def test_generate_character_returns_the_requested_size_and_its_clean_tags():
    character = generate_character(random.Random(5), VOCAB, size=160)
    assert character.image.size == (160, 160) and character.image.mode == "RGB"
    assert character.tags == clean_tags(character.truth, VOCAB)
    assert character.truth == truth_of(character.spec, VOCAB, random.Random(0))  # no label-only attributes here


# -- drawing: every attribute is visible ---------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(DRAWABLE))
def test_every_value_of_a_drawn_attribute_draws_a_different_picture(key):
    pictures = {value: _pixels(_with_value(key, value)) for value in DRAWABLE[key]}
    if key == "accessories":
        pictures["(none)"] = _pixels(dataclasses.replace(BASE, accessories=()))
    for (a, pa), (b, pb) in itertools.combinations(pictures.items(), 2):
        assert _changed(pa, pb).sum() >= 12, f"{key}: {a} and {b} look the same"


@pytest.mark.parametrize("key,palette", [("hair_color", HAIR_RGB), ("eye_color", EYE_RGB), ("skin_tone", SKIN_RGB)])
def test_colour_attributes_are_drawn_in_their_colour(key, palette):
    for value, rgb in palette.items():
        reference = {"black": "white", "dark": "pale"}.get(value, "dark" if key == "skin_tone" else "black")
        picture = _pixels(_with_value(key, value), size=256)
        changed = _changed(picture, _pixels(_with_value(key, reference), size=256))
        assert changed.sum() > 100
        assert np.abs(np.array(_dominant(picture, changed)) - rgb).max() <= 4, f"{key}={value}"


def test_colored_skin_is_one_of_the_non_human_skin_colours():
    picture = _pixels(_with_value("skin_tone", "colored"), size=256)
    changed = _changed(picture, _pixels(_with_value("skin_tone", "fair"), size=256))
    assert _dominant(picture, changed) in COLORED_SKIN_RGB


def test_heterochromia_draws_each_eye_in_its_own_colour():
    both = _pixels(dataclasses.replace(BASE, eye_color=("blue", "red")), size=256)
    blue = _pixels(dataclasses.replace(BASE, eye_color=("blue",)), size=256)
    red = _pixels(dataclasses.replace(BASE, eye_color=("red",)), size=256)
    middle = round(128 + _variation().dx)
    assert _changed(both[:, : middle - 2], blue[:, : middle - 2]).sum() == 0  # left eye as the blue-eyed picture
    assert _changed(both[:, middle + 2:], red[:, middle + 2:]).sum() == 0  # right eye as the red-eyed picture
    assert _changed(both, blue).sum() > 50 and _changed(both, red).sum() > 50


def test_multicoloured_hair_shows_both_colours():
    def near(picture, rgb):
        return int((np.abs(picture - np.array(rgb)).max(axis=2) <= 4).sum())

    two = _pixels(dataclasses.replace(BASE, hair_color=("pink", "blue"), hair_length="long"), size=256)
    one = _pixels(dataclasses.replace(BASE, hair_color=("pink",), hair_length="long"), size=256)
    assert near(two, HAIR_RGB["blue"]) > 300 and near(two, HAIR_RGB["pink"]) > 300
    assert near(one, HAIR_RGB["blue"]) < 20


def test_clothing_changes_stay_below_the_face_and_expression_changes_stay_in_it():
    neutral = _pixels(BASE, size=256)

    def changed_rows(**change):
        return np.nonzero(_changed(neutral, _pixels(dataclasses.replace(BASE, **change), size=256)).any(axis=1))[0]

    clothing_rows, face_rows = changed_rows(clothing="armor"), changed_rows(expression="angry")
    assert clothing_rows.size and face_rows.size
    assert face_rows.max() < clothing_rows.min()


def test_longer_hair_reaches_further_down():
    lowest = []
    for length in ("short", "medium", "long", "very_long"):
        bald = _pixels(_with_value("hair_length", "bald"), size=256)
        hair = _changed(_pixels(_with_value("hair_length", length), size=256), bald)
        lowest.append(np.nonzero(hair.any(axis=1))[0].max())
    assert lowest == sorted(lowest) and len(set(lowest)) == 4


def test_character_spec_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="gloves"):
        dataclasses.replace(BASE, accessories=("gloves",))
    with pytest.raises(ValueError, match="bald"):
        dataclasses.replace(BASE, hair_length="bald")  # bald with a hair colour
    with pytest.raises(ValueError, match="at most one"):
        dataclasses.replace(BASE, hair_style=("ponytail", "twintails"))


# -- ground truth -------------------------------------------------------------------------------------------


def test_truth_uses_vocabulary_values_and_covers_every_drawable_value():
    seen: dict[str, set[str]] = {}
    for truth in _truths(2000, seed=11):
        assert set(truth) <= set(VOCAB.keys)
        for key, values in truth.items():
            assert set(values) <= set(VOCAB.attribute(key).value_names), (key, values)
            if key in SINGLE_VALUED:
                assert len(values) == 1
            seen.setdefault(key, set()).update(values)
        if truth["hair_length"] == ["bald"]:
            assert "hair_color" not in truth and "hair_style" not in truth
        else:
            assert 1 <= len(truth["hair_color"]) <= 2 and truth["hair_style"]
    for key in drawn_attributes(VOCAB):
        assert seen[key] == set(DRAWABLE[key]) & set(VOCAB.attribute(key).value_names), key


def test_every_bundled_attribute_is_drawn_and_the_undrawn_values_are_listed():
    assert set(drawn_attributes(VOCAB)) == set(VOCAB.keys)
    # The vocabulary covers more than the drawing can show (issue 13); these are labels only.
    assert undrawn_values(VOCAB) == {
        "gender": ["mixed"],  # several characters: the generator draws one
        "hair_style": ["side_up", "half_updo", "hair_rings", "hime_cut", "afro", "dreadlocks"],
        "clothing": ["work_uniform", "sportswear", "chinese_traditional", "lolita_fashion", "bodysuit"],
        "accessories": ["sunglasses", "goggles", "helmet", "crown", "gloves", "necktie", "bowtie"],
    }


def test_a_custom_vocabulary_limits_drawn_values_and_gets_label_only_attributes(tmp_path):
    path = tmp_path / "vocab.toml"
    path.write_text("""
[attributes.hair_color]
multi = true
[attributes.hair_color.values.red]
tags = ["red_hair"]
prompts = ["red hair"]
[attributes.hair_color.values.blue]
tags = ["blue_hair"]
prompts = ["blue hair"]
[attributes.hair_color.values.rainbow]
tags = ["rainbow_hair"]
prompts = ["rainbow hair"]
[attributes.mood.values.calm]
tags = ["calm"]
prompts = ["calm"]
[attributes.mood.values.excited]
tags = ["excited"]
prompts = ["excited"]
""")
    vocab = load_vocabulary(path)
    assert drawn_attributes(vocab) == ("hair_color",)
    assert undrawn_values(vocab) == {"hair_color": ["rainbow"]}
    rng = random.Random(2)
    moods = Counter()
    for _ in range(300):
        spec = sample_spec(rng, vocab)
        truth = truth_of(spec, vocab, rng)
        assert set(spec.hair_color) <= {"red", "blue"}
        assert set(truth) <= {"hair_color", "mood"} and len(truth["mood"]) == 1
        assert truth.get("hair_color", list(spec.hair_color)) == list(spec.hair_color)
        moods.update(truth["mood"])
    assert set(moods) == {"calm", "excited"}


# -- tags and noise ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", [0.0, 1.0])
def test_tags_without_missing_or_wrong_noise_read_back_to_the_truth(alias):
    noise = TagNoise(missing=0.0, wrong=0.0, alias=alias, extra=1.0, no_tags=0.0)
    rng = random.Random(5)
    aliased = 0
    for truth in _truths(1500, seed=5):
        tags = noisy_tags(truth, rng, VOCAB, noise)
        clean = set(clean_tags(truth, VOCAB))
        assert _read_back(tags) == {k: set(v) for k, v in truth.items() if v}
        assert ("multicolored_hair" in tags) == (len(truth.get("hair_color", [])) == 2)
        assert ("heterochromia" in tags) == (len(truth["eye_color"]) == 2)
        assert set(extra_tag_pool(VOCAB)) <= set(tags)
        aliased += any(tag not in clean and tag not in EXTRA_TAGS for tag in tags)
    assert (aliased > 1000) == (alias == 1.0)


@pytest.mark.parametrize("noise", [TagNoise(), TagNoise(missing=0.5, wrong=0.02, alias=0.4, extra=0.05, no_tags=0.3)])
def test_noise_rates_are_honoured(noise):
    rng = random.Random(9)
    outcomes = Counter()
    alias_trials = alias_hits = extra_hits = no_sidecar = 0
    pool = extra_tag_pool(VOCAB)
    truths = _truths(2000, seed=9)
    for truth in truths:
        tags = sidecar_tags(truth, rng, VOCAB, noise)
        if tags is None:
            no_sidecar += 1
            tags = noisy_tags(truth, rng, VOCAB, noise)
        read = _read_back(tags)
        for key in SINGLE_VALUED:
            value = VOCAB.attribute(key).value(truth[key][0])
            stated = read.get(key, set())
            if not stated:
                outcomes["missing"] += 1
            elif stated != {value.name}:
                outcomes["wrong"] += 1
            if value.aliases and stated == {value.name}:
                alias_trials += 1
                alias_hits += any(t in value.aliases for t in tags)
        extra_hits += sum(t in tags for t in pool)
    trials = len(truths) * len(SINGLE_VALUED)
    assert outcomes["missing"] / trials == pytest.approx(noise.missing, abs=0.02)
    assert outcomes["wrong"] / trials == pytest.approx(noise.wrong, abs=0.015)
    # among kept tags of values that have aliases, the alias share is alias / (1 - missing - wrong)
    assert alias_hits / alias_trials == pytest.approx(noise.alias / (1 - noise.missing - noise.wrong), abs=0.03)
    assert extra_hits / (len(truths) * len(pool)) == pytest.approx(noise.extra, abs=0.015)
    assert no_sidecar / len(truths) == pytest.approx(noise.no_tags, abs=0.03)


def test_extra_tags_are_real_tags_that_name_no_attribute():
    assert len(extra_tag_pool(VOCAB)) >= 8
    assert not _read_back(list(extra_tag_pool(VOCAB)))


def test_tag_strings_come_in_both_user_formats_and_parse_back():
    tags = ["1girl", "long_hair", "blue_eyes", "t-shirt", "^_^", "solo"]
    formats = Counter()
    rng = random.Random(1)
    for _ in range(100):
        text = format_tags(tags, rng)
        if ", " in text:
            formats["comma"] += 1
            assert "_" not in text.replace("^_^", "")
            parsed = [normalize_tag(t) for t in text.split(",")]
        else:
            formats["space"] += 1
            parsed = text.split(" ")
            assert parsed == sorted(tags)
        assert sorted(parsed) == sorted(tags)
    assert formats["comma"] > 20 and formats["space"] > 20


@pytest.mark.parametrize("kwargs", [dict(missing=1.2), dict(extra=-0.1), dict(missing=0.6, wrong=0.3, alias=0.2),
                                    dict(no_tags="often")])
def test_bad_noise_rates_are_refused_in_one_sentence(kwargs):
    with pytest.raises(ConfigError, match=r"^Tag noise rate.*\.$"):
        TagNoise(**kwargs)


# -- writers -------------------------------------------------------------------------------------------------


def test_write_demo_dataset_layout_and_ground_truth(tmp_path):
    info = write_demo_dataset(tmp_path / "demo", n_images=11, n_shards=3, seed=2, size=96,
                              noise=TagNoise(no_tags=0.4))
    out = tmp_path / "demo"
    assert [p.name for p in info.shards] == ["shard_000", "shard_001", "shard_002"]
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "dataset.json", "ground_truth.jsonl",
                                                     "shard_000", "shard_001", "shard_002"]
    rows = [json.loads(line) for line in info.ground_truth_path.read_text().splitlines()]
    assert len(rows) == info.n_images == 11
    assert [r["index"] for r in rows] == list(range(11))
    assert sum(len(list(s.glob("*.png"))) for s in info.shards) == 11
    assert all(3 <= len(list(s.glob("*.png"))) <= 4 for s in info.shards)
    for row in rows:
        png = (out / row["file"]).read_bytes()
        assert row["image_id"] == content_hash(png)
        sidecar = (out / row["file"]).with_suffix(".txt")
        assert sidecar.exists() == (row["noisy_tags"] is not None) == (row["sidecar"] is not None)
        if sidecar.exists():
            assert sidecar.read_text().strip() == row["tags_text"]
    assert 0 < info.n_with_tags < 11 and info.n_with_tags == sum(r["noisy_tags"] is not None for r in rows)
    assert load_ground_truth(out) == {r["image_id"]: r["truth"] for r in rows}
    meta = json.loads(info.metadata_path.read_text())
    assert meta["complete"] and meta["seed"] == 2 and meta["noise"]["no_tags"] == 0.4
    assert meta["drawn_attributes"] == list(VOCAB.keys) and meta["label_only_attributes"] == []


def test_rewriting_replaces_the_earlier_demo_files_and_keeps_the_users(tmp_path):
    write_demo_dataset(tmp_path, n_images=6, n_shards=2, seed=0, size=64)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "shard_000" / "mine.png").write_bytes(b"not ours")
    info = write_demo_dataset(tmp_path, n_images=2, n_shards=1, seed=0, size=64)
    pngs = sorted(p.name for p in (tmp_path / "shard_000").glob("*.png"))
    assert pngs == ["char_00000.png", "char_00001.png", "mine.png"]
    assert not (tmp_path / "shard_001").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert len(load_ground_truth(info.ground_truth_path)) == 2


def test_parquet_layout_round_trips_and_matches_the_folder_layout(tmp_path):
    info = write_demo_parquet(tmp_path / "pq", n_images=9, n_shards=2, seed=4, size=64, row_group_size=3)
    folder = write_demo_dataset(tmp_path / "folder", n_images=9, n_shards=2, seed=4, size=64)
    assert [p.name for p in info.shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    truth_rows = [json.loads(line) for line in info.ground_truth_path.read_text().splitlines()]
    ids, tags = [], []
    for path in info.shards:
        parquet = pq.ParquetFile(path)
        assert parquet.metadata.num_row_groups == -(-parquet.metadata.num_rows // 3)
        assert b"huggingface" in parquet.schema_arrow.metadata
        for row in parquet.read().to_pylist():
            ids.append(content_hash(row["image"]["bytes"]))
            tags.append(row["tags"])
            assert row["image"]["path"].endswith(".png")
    assert ids == [r["image_id"] for r in truth_rows]
    assert tags == [r["tags_text"] for r in truth_rows]
    assert load_ground_truth(info.ground_truth_path) == load_ground_truth(folder.ground_truth_path)


def test_the_readers_see_the_demo_data_as_written(tmp_path):
    from charattr_core import sources

    for writer in (write_demo_dataset, write_demo_parquet):
        info = writer(tmp_path / writer.__name__, n_images=6, n_shards=2, seed=8, size=64, noise=TagNoise(no_tags=0.5))
        rows = map(json.loads, info.ground_truth_path.read_text().splitlines())
        expected = {r["image_id"]: r["tags_text"] for r in rows}
        source = sources.open_source(info.out_dir)
        seen = {content_hash(item.data): item.tags for shard in source.shards() for item in source.read(shard)}
        assert seen == expected, writer.__name__


@pytest.mark.parametrize("kwargs,match", [(dict(n_images=0), "at least 1 image"), (dict(n_shards=0), "n_shards"),
                                          (dict(n_images=2, n_shards=3), "n_shards"), (dict(size=8), "at least 32")])
def test_bad_writer_arguments_are_refused(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        write_demo_dataset(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_writing_over_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        write_demo_dataset(tmp_path / "file", n_images=1, n_shards=1)


def test_load_ground_truth_names_the_bad_line(tmp_path):
    path = tmp_path / "ground_truth.jsonl"
    path.write_text('{"image_id": "a", "truth": {"age": ["teen"]}}\n{oops\n')
    with pytest.raises(ConfigError, match="line 2"):
        load_ground_truth(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_ground_truth(tmp_path / "missing")
