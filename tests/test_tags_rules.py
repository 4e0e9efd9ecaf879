"""The parser's rules for what a careful person reads in a post (issue 13), without shared data.

Conflicts settled by data (implications, overrides), posts with several characters, tags that
name no value (a fringe, an open mouth, a necktie), the vocabulary's coverage, and the seed-style
`to_dict()`. The same rules on real Danbooru posts: tests/test_tags_real_rules.py.
"""

from __future__ import annotations

import pytest

from charattr_core.errors import ConfigError
from charattr_core.records import AttributeEstimate, FusedAttributes
from charattr_core.schema import UNKNOWN, load_vocabulary
from charattr_core.tags import MULTI_CHARACTER_CAP, TagParser

ACCEPT = 0.8


@pytest.fixture(scope="module")
def vocabulary():
    return load_vocabulary()


@pytest.fixture(scope="module")
def parser(vocabulary):
    return TagParser(vocabulary)


def answer(parser, raw, key):
    return parser.parse(raw).estimates[key]


# -- hair length: long locks on short hair ------------------------------------------------------------

@pytest.mark.parametrize("raw", ["1girl long_hair short_hair", "1girl short_hair long_hair", "short_hair long_hair"])
def test_long_and_short_hair_on_one_character_is_long_but_not_beyond_doubt(parser, raw):
    est = answer(parser, raw, "hair_length")
    assert est.values == ("long",) and est.evidence == ("long_hair",)
    assert 0.5 < est.confidence < ACCEPT  # the tags did disagree: CLIP still has a say
    assert est.scores["short"] < est.scores["long"]


def test_very_long_hair_beats_short_hair_too(parser):
    est = answer(parser, "1girl very_long_hair long_hair short_hair", "hair_length")
    assert est.values == ("very_long",) and est.evidence == ("very_long_hair",)


def test_an_implying_tag_written_as_an_alias_still_implies(parser):
    # hair_past_waist is an alias of very_long_hair, which implies long_hair
    est = answer(parser, "1girl long_hair hair_past_waist", "hair_length")
    assert est.values == ("very_long",) and est.confidence >= ACCEPT and "long" not in est.scores


def test_the_override_is_data_a_vocabulary_without_it_splits(tmp_path):
    text = """
[context]
single_character = ["1girl"]
[attributes.hair_length]
multi = false
[attributes.hair_length.values.short]
tags = ["short_hair"]
prompts = ["short hair"]
[attributes.hair_length.values.long]
tags = ["long_hair"]
prompts = ["long hair"]
"""
    plain = tmp_path / "plain.toml"
    plain.write_text(text, encoding="utf-8")
    ruled = tmp_path / "ruled.toml"
    ruled.write_text(text + '[[attributes.hair_length.overrides]]\ntag = "short_hair"\nover = ["long_hair"]\n',
                     encoding="utf-8")
    split = TagParser(load_vocabulary(plain)).parse("1girl long_hair short_hair").estimates["hair_length"]
    assert split.scores["short"] == split.scores["long"] and split.confidence < 0.5
    settled = TagParser(load_vocabulary(ruled)).parse("1girl long_hair short_hair").estimates["hair_length"]
    assert settled.values == ("short",) and settled.evidence == ("short_hair",)  # this file's rule, not ours


def test_implications_are_data_too(tmp_path):
    path = tmp_path / "vocab.toml"
    path.write_text("""
[implications]
huge_hat = ["hat"]
[attributes.headwear]
multi = false
[attributes.headwear.values.hat]
tags = ["hat"]
prompts = ["a hat"]
[attributes.headwear.values.huge_hat]
tags = ["huge_hat"]
prompts = ["a huge hat"]
""", encoding="utf-8")
    est = TagParser(load_vocabulary(path)).parse("hat huge_hat").estimates["headwear"]
    assert est.values == ("huge_hat",) and est.confidence >= ACCEPT and "hat" not in est.scores


@pytest.mark.parametrize("section, message", [
    ('[attributes.a]\nmixed_value = "nope"\n[attributes.a.values.x]\ntags = ["x"]\nprompts = ["x"]\n', "mixed_value"),
    ('[attributes.a]\noverrides = [{over = ["x"]}]\n[attributes.a.values.x]\ntags = ["x"]\nprompts = ["x"]\n', "needs a tag"),
    ('implications = ["x"]\n[attributes.a.values.x]\ntags = ["x"]\nprompts = ["x"]\n', "implications"),
])
def test_malformed_rules_are_configuration_errors(tmp_path, section, message):
    path = tmp_path / "bad.toml"
    path.write_text(section, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_vocabulary(path)


# -- several characters ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, count", [
    ("1boy 1girl", 2), ("1girl 2boys multiple_boys", 3), ("2girls 1boy multiple_girls", 3),
    ("1girl multiple_boys", 4), ("multiple_girls multiple_boys", 6),
])
def test_posts_with_girls_and_boys_are_mixed(parser, raw, count):
    parse = parser.parse(raw)
    gender = parse.estimates["gender"]
    assert parse.character_count == count
    assert gender.values == ("mixed",) and gender.confidence >= ACCEPT
    assert set(gender.evidence) == set(raw.split())  # the counting tags, and nothing else


@pytest.mark.parametrize("raw, value, count", [
    ("2girls multiple_girls", "female", 2), ("multiple_girls", "female", 3), ("3boys multiple_boys", "male", 3),
])
def test_posts_with_several_characters_of_one_gender_say_so(parser, raw, value, count):
    parse = parser.parse(raw)
    assert parse.character_count == count
    assert parse.estimates["gender"].values == (value,) and parse.estimates["gender"].confidence >= ACCEPT


def test_a_per_character_conflict_on_a_group_post_is_unknown_not_a_guess(parser):
    est = answer(parser, "2girls multiple_girls long_hair short_hair", "hair_length")
    assert est.values == (UNKNOWN,) and est.confidence == 0.0 and est.evidence == ()
    assert set(est.scores) == {"short", "long"}  # what the tags said stays visible
    assert max(est.scores.values()) <= MULTI_CHARACTER_CAP


def test_a_value_every_character_may_share_stays_a_capped_answer(parser):
    est = answer(parser, "2girls multiple_girls long_hair", "hair_length")
    assert est.values == ("long",) and est.confidence == MULTI_CHARACTER_CAP


# -- tags that name no value -------------------------------------------------------------------------

def test_an_open_mouth_alone_is_not_surprise(parser):
    assert answer(parser, "1girl open_mouth", "expression").is_unknown
    assert answer(parser, "1girl open_mouth wide-eyed", "expression").values == ("surprised",)


def test_a_necktie_alone_is_not_formal_it_is_a_necktie(parser):
    parse = parser.parse("1girl necktie")
    assert parse.estimates["clothing"].is_unknown
    assert parse.estimates["accessories"].values == ("necktie",)
    assert parser.parse("1girl school_uniform necktie").estimates["clothing"].values == ("school_uniform",)
    assert "formal" in parser.parse("1boy suit necktie").estimates["clothing"].values


@pytest.mark.parametrize("tag", ["chinese_clothes", "tangzhuang", "china_dress", "hanfu", "cheongsam", "qipao"])
def test_chinese_dress_is_chinese_traditional_not_japanese(parser, tag):
    est = answer(parser, f"1girl {tag}", "clothing")
    assert est.values == ("chinese_traditional",) and est.confidence >= ACCEPT


@pytest.mark.parametrize("tag", ["kimono", "yukata", "hakama", "miko", "japanese_clothes"])
def test_japanese_dress_is_japanese_traditional(parser, tag):
    assert answer(parser, f"1girl {tag}", "clothing").values == ("japanese_traditional",)


@pytest.mark.parametrize("fringe", ["blunt_bangs", "swept_bangs", "parted_bangs", "ahoge", "sidelocks"])
def test_a_fringe_is_not_a_hair_style(parser, fringe):
    assert answer(parser, f"1girl {fringe}", "hair_style").is_unknown
    est = answer(parser, f"1girl twintails {fringe}", "hair_style")
    assert est.values == ("twintails",) and set(est.scores) == {"twintails"}


# -- coverage ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, values", [
    ("clothing", {"school_uniform", "maid", "military_uniform", "work_uniform", "sportswear", "swimsuit",
                  "japanese_traditional", "chinese_traditional", "formal", "casual", "armor", "dress"}),
    ("hair_style", {"twintails", "ponytail", "side_ponytail", "braid", "bun", "drills", "hime_cut", "side_up",
                    "bob_cut", "straight", "wavy", "curly"}),
    ("accessories", {"glasses", "sunglasses", "goggles", "hat", "helmet", "crown", "necktie", "bowtie"}),
    ("gender", {"female", "male", "mixed"}),
])
def test_the_default_vocabulary_covers_what_people_filter_by(vocabulary, key, values):
    assert values <= set(vocabulary.attribute(key).value_names)


@pytest.mark.parametrize("raw, key, value", [
    ("maid_headdress maid", "clothing", "maid"), ("serafuku", "clothing", "school_uniform"),
    ("gym_uniform", "clothing", "sportswear"), ("plugsuit", "clothing", "bodysuit"),
    ("twin_braids", "hair_style", "braid"), ("double_bun", "hair_style", "bun"), ("twin_drills", "hair_style", "drills"),
    ("two_side_up", "hair_style", "side_up"), ("hime_cut", "hair_style", "hime_cut"),
    ("witch_hat", "accessories", "hat"), ("tiara", "accessories", "crown"), ("round_eyewear", "accessories", "glasses"),
    ("goggles_on_head", "accessories", "goggles"), ("tie", "accessories", "necktie"),
])
def test_danbooru_tags_of_each_kind_land_in_their_value(parser, raw, key, value):
    est = answer(parser, "1girl " + raw, key)
    assert est.values == (value,) and est.confidence >= ACCEPT


# -- the seed-style output ---------------------------------------------------------------------------

def _row(vocabulary, **estimates: AttributeEstimate) -> FusedAttributes:
    attributes = {a.key: AttributeEstimate(a.key) for a in vocabulary.attributes}
    attributes.update(estimates)
    return FusedAttributes("img", attributes, "tag_priority", confidence=0.8)


def test_to_dict_puts_the_most_confident_value_first(vocabulary):
    style = AttributeEstimate("hair_style", ("straight", "twintails"), 0.5, ("twintails", "straight_hair"),
                              {"straight": 0.5, "twintails": 0.9})
    row = _row(vocabulary, hair_style=style)
    assert row.to_dict(vocabulary)["Hair Style"] == ["twintails", "straight"]
    assert row.to_dict()["Hair Style"] == "twintails"  # no vocabulary: one value, the most confident


def test_to_dict_names_skin_tone_and_keeps_the_seed_key_as_an_alias(vocabulary):
    row = _row(vocabulary, skin_tone=AttributeEstimate("skin_tone", ("tan",), 0.9, ("tan",), {"tan": 0.9}))
    assert row.to_dict(vocabulary)["Skin Tone"] == "tan" and "Ethnicity" not in row.to_dict(vocabulary)
    seed = row.to_dict(vocabulary, seed_labels=True)
    assert seed["Ethnicity"] == "tan" and "Skin Tone" not in seed
    assert vocabulary.labels()["skin_tone"] == "Skin Tone"
    assert vocabulary.labels(seed=True)["skin_tone"] == "Ethnicity"
    assert vocabulary.labels(seed=True)["hair_color"] == "Hair Color"  # no seed key of its own
