"""The Danbooru tag parser: splitting, aliases, the confidence model, the stage function."""

from __future__ import annotations

import json
import random

import pytest

from charattr_core.records import ImageRecord, TagParse
from charattr_core.schema import UNKNOWN, load_vocabulary
from charattr_core.tag_syntax import needs_scan, split_weighted_tags
from charattr_core.tags import (
    TAGS_STAGE_VERSION,
    TagParser,
    parse_tags,
    split_tags,
    tags_stage_version,
)

ACCEPT = 0.8  # the accept threshold of the design


@pytest.fixture(scope="module")
def vocabulary():
    return load_vocabulary()


@pytest.fixture(scope="module")
def parser(vocabulary):
    return TagParser(vocabulary)


def answer(parser, raw, attribute):
    return parser.parse(raw).estimates[attribute]


# -- splitting ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("1girl long_hair  blue_eyes\n\tsmile", ["1girl", "long_hair", "blue_eyes", "smile"]),
    ("Long Hair, Red Eyes", ["long_hair", "red_eyes"]),
    ("1girl, long_hair, red eyes,blue  sky", ["1girl", "long_hair", "red_eyes", "blue_sky"]),
    (" , ,long hair,, ,", ["long_hair"]),
    ("long hair,\nred eyes\nsmile", ["long_hair", "red_eyes", "smile"]),
    ("smile 1girl smile", ["smile", "1girl"]),
    ("bat_(animal) >:) :) /\\/\\/\\ ganyu_(genshin_impact)",
     ["bat_(animal)", ">:)", ":)", "/\\/\\/\\", "ganyu_(genshin_impact)"]),
    ("ganyu \\(genshin impact\\), 1girl", ["ganyu_(genshin_impact)", "1girl"]),
    ("ganyu (genshin impact), 1girl", ["ganyu_(genshin_impact)", "1girl"]),
    ("ganyu_\\(genshin_impact\\) 1girl", ["ganyu_(genshin_impact)", "1girl"]),
    ("", []), ("   \n ", []), (None, []),
])
def test_split_tags_reads_every_format(raw, expected):
    assert split_tags(raw) == expected


def test_prompt_weights_follow_the_front_end_conventions():
    weights = dict(split_weighted_tags("(red_hair:1.2), ((smile)), [blush], {sparkle}, 1girl, (a, b:0.8)"))
    assert weights["red_hair"] == pytest.approx(1.2)
    assert weights["smile"] == pytest.approx(1.21)
    assert weights["blush"] == pytest.approx(1 / 1.1)
    assert weights["sparkle"] == pytest.approx(1.05)
    assert weights["1girl"] == 1.0
    assert weights["a"] == weights["b"] == pytest.approx(0.8)


def test_weights_without_commas_apply_to_every_tag_in_the_group():
    weights = dict(split_weighted_tags("(long_hair red_eyes:1.3) [[blush]] 1girl (smile"))
    assert weights["long_hair"] == weights["red_eyes"] == pytest.approx(1.3)
    assert weights["blush"] == pytest.approx(1 / 1.21)
    assert weights["1girl"] == 1.0
    assert weights["smile"] == pytest.approx(1.1)  # an unclosed group still weighs


def test_a_tagged_character_name_inside_a_weight_group_stays_one_tag():
    assert split_weighted_tags("(ganyu (genshin impact):1.2), :d") == [("ganyu_(genshin_impact)", 1.2), (":d", 1.0)]


def test_repeated_tags_keep_their_largest_weight_unless_repeats_are_asked_for():
    assert split_weighted_tags("[smile], (smile:1.3)") == [("smile", 1.3)]
    assert len(split_weighted_tags("[smile], (smile:1.3)", keep_repeats=True)) == 2


def test_only_brackets_where_a_tag_starts_need_the_scanner():
    assert not needs_scan("1girl bat_(animal) >:) hatsune_miku_(append) :(")
    assert not needs_scan("1girl, ganyu (genshin impact), long hair")  # a tagger caption
    assert not needs_scan("1girl, ganyu \\(genshin impact\\)")  # escaped: literal
    assert not needs_scan("1girl \\(smile\\)")
    assert needs_scan("1girl (smile:1.2)")
    assert needs_scan("1girl,[blush]")
    assert needs_scan("1girl,  (blush)")
    assert needs_scan("1girl\n(smile)")
    assert needs_scan("(masterpiece), 1girl")


@pytest.mark.parametrize("raw", [
    "1girl, ganyu \\(genshin impact\\), colored skin \\(blue\\)",
    "1girl ganyu_\\(genshin_impact\\) colored_skin_\\(blue\\)",
    "1girl, ganyu (genshin impact), colored skin (blue)",
    "(1girl:1.0), ganyu \\(genshin impact\\), (colored skin \\(blue\\):1.0)",
])
def test_character_tags_in_parentheses_read_the_same_in_every_spelling(raw):
    assert split_tags(raw) == ["1girl", "ganyu_(genshin_impact)", "colored_skin_(blue)"]


# -- one tag, aliases, weak tags ---------------------------------------------------------------------

def test_one_strong_tag_gives_a_confident_answer_with_its_evidence(parser):
    est = answer(parser, "1girl solo blonde_hair", "hair_color")
    assert est.values == ("blonde",)
    assert est.confidence == pytest.approx(0.9) and est.confidence >= ACCEPT
    assert est.evidence == ("blonde_hair",)
    assert est.scores == {"blonde": pytest.approx(0.9)}


@pytest.mark.parametrize("raw, attribute, value, canonical", [
    ("blond_hair", "hair_color", "blonde", "blonde_hair"),
    ("Blond Hair, 1girl", "hair_color", "blonde", "blonde_hair"),
    ("cyan_eyes", "eye_color", "aqua", "aqua_eyes"),
    ("gray_hair", "hair_color", "grey", "grey_hair"),
    ("twintail", "hair_style", "twintails", "twintails"),
])
def test_aliases_resolve_to_the_canonical_tag(parser, raw, attribute, value, canonical):
    est = answer(parser, raw, attribute)
    assert est.values == (value,)
    assert est.evidence == (canonical,)
    assert est.confidence >= ACCEPT


def test_only_weak_tags_give_a_moderate_answer(parser):
    est = answer(parser, "1girl blush", "expression")
    assert est.values == ("embarrassed",)
    assert est.confidence == pytest.approx(0.5)


def test_a_weak_tag_against_a_strong_one_costs_a_little(parser):
    est = answer(parser, "1girl smile blush", "expression")
    assert est.values == ("happy",)
    assert est.confidence == pytest.approx(0.85)
    assert est.evidence == ("smile",)  # evidence is what produced the answer
    assert 0 < est.scores["embarrassed"] < est.scores["happy"]


def test_several_tags_for_one_value_strengthen_it(parser):
    one = answer(parser, "1girl blue_hair", "hair_color")
    two = answer(parser, "1girl blue_hair light_blue_hair", "hair_color")
    assert two.values == ("blue",) and two.confidence > one.confidence
    assert set(two.evidence) == {"blue_hair", "light_blue_hair"}


def test_attributes_the_tags_do_not_mention_stay_unknown(parser, vocabulary):
    parse = parser.parse("1girl solo blonde_hair", "img")
    assert list(parse.estimates) == list(vocabulary.keys)
    for key in vocabulary.keys:
        if key in ("hair_color", "gender"):
            continue
        est = parse.estimates[key]
        assert est.values == (UNKNOWN,) and est.confidence == 0.0 and est.evidence == () and est.scores == {}


@pytest.mark.parametrize("raw", [None, "", "   ", ", ,", "highres absurdres commentary_request"])
def test_empty_or_irrelevant_tags_say_nothing(parser, raw):
    parse = parser.parse(raw, "img")
    assert parse.image_id == "img"
    assert parse.character_count is None
    assert all(e.is_unknown and e.confidence == 0 for e in parse.estimates.values())
    assert parse.tag_count == (3 if raw and "highres" in raw else 0)


# -- conflicts ---------------------------------------------------------------------------------------

def test_two_hair_colours_on_one_character_without_a_modifier_are_both_returned_with_low_confidence(parser):
    est = answer(parser, "1girl solo blonde_hair black_hair", "hair_color")
    assert set(est.values) == {"blonde", "black"}
    assert est.confidence < ACCEPT
    assert est.scores["blonde"] == est.scores["black"] < ACCEPT


@pytest.mark.parametrize("modifier", ["multicolored_hair", "two-tone_hair", "streaked_hair", "gradient_hair"])
def test_a_modifier_makes_two_hair_colours_a_confident_answer(parser, modifier):
    est = answer(parser, f"1girl solo blonde_hair black_hair {modifier}", "hair_color")
    assert set(est.values) == {"blonde", "black"}
    assert est.confidence >= ACCEPT
    assert modifier in est.evidence


def test_a_modifier_with_a_single_colour_is_an_incomplete_answer(parser):
    est = answer(parser, "1girl multicolored_hair pink_hair", "hair_color")
    assert est.values == ("pink",)
    assert 0.3 < est.confidence < ACCEPT


def test_two_eye_colours_are_confident_only_with_heterochromia(parser):
    without = answer(parser, "1girl solo blue_eyes red_eyes", "eye_color")
    with_it = answer(parser, "1girl solo blue_eyes red_eyes heterochromia", "eye_color")
    assert set(without.values) == set(with_it.values) == {"blue", "red"}
    assert without.confidence < ACCEPT <= with_it.confidence
    assert "heterochromia" in with_it.evidence


def test_conflicting_tags_of_a_single_valued_attribute_split_the_confidence(parser):
    # (short_hair beside long_hair is settled by an override rule: tests/test_tags_rules.py)
    est = answer(parser, "1girl solo short_hair medium_hair", "hair_length")
    assert len(est.values) == 1 and est.values[0] in {"short", "medium"}
    assert est.confidence < ACCEPT
    assert est.scores["short"] == est.scores["medium"] == pytest.approx(0.45)
    assert sum(est.scores.values()) <= 1.0


def test_danbooru_implications_are_not_conflicts(parser):
    est = answer(parser, "1girl long_hair very_long_hair", "hair_length")
    assert est.values == ("very_long",) and est.confidence >= ACCEPT
    assert "long" not in est.scores
    assert answer(parser, "1girl short_hair very_short_hair", "hair_length").values == ("very_short",)


def test_multi_valued_attributes_without_modifiers_take_every_strong_value(parser):
    est = answer(parser, "1girl glasses hat gloves bow", "accessories")
    assert set(est.values) == {"glasses", "hat", "gloves"}  # the weak `bow` does not join them
    assert est.confidence >= ACCEPT
    assert est.scores["hair_ribbon"] == pytest.approx(0.5)


# -- several characters ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, count", [
    ("1girl solo", 1), ("solo", 1), ("2girls multiple_girls", 2), ("1boy 1girl", 2), ("1girl 1boy", 2),
    ("multiple_girls", 3), ("6+girls multiple_girls", 6), ("3girls 2boys", 5),
    ("1girl multiple_boys", 4), ("1girls", 1), ("crowd", 3),
    ("long_hair smile", None), ("", None),
])
def test_character_count_comes_from_the_counting_tags(parser, raw, count):
    assert parser.parse(raw).character_count == count
    assert parser.character_count(raw) == count


def test_per_character_attributes_of_a_multi_character_post_are_never_confident(parser):
    parse = parser.parse("2girls multiple_girls blonde_hair long_hair blue_eyes smile school_uniform")
    assert parse.multi_character
    for key, est in parse.estimates.items():
        if key != "gender" and not est.is_unknown:
            assert est.confidence <= 0.6 < ACCEPT, key
            assert max(est.scores.values()) <= 0.6


def test_several_hair_colours_on_a_multi_character_post_are_explained_but_capped(parser):
    est = answer(parser, "2girls blonde_hair black_hair", "hair_color")
    assert set(est.values) == {"blonde", "black"}
    assert est.confidence == pytest.approx(0.6)


def test_gender_stated_by_a_counting_tag_holds_for_every_character(parser):
    assert answer(parser, "2girls multiple_girls", "gender").values == ("female",)
    assert answer(parser, "2girls multiple_girls", "gender").confidence >= ACCEPT
    assert answer(parser, "3boys multiple_boys", "gender").values == ("male",)


@pytest.mark.parametrize("raw", ["1boy 1girl", "1girl 1boy solo_focus", "2girls 1boy multiple_girls"])
def test_mixed_gender_posts_are_answered_mixed_not_one_of_them(parser, raw):
    est = answer(parser, raw, "gender")
    assert est.values == ("mixed",) and est.confidence >= ACCEPT
    assert "female" not in est.scores and "male" not in est.scores
    assert {"1boy"} < set(est.evidence) <= {"1boy", "1girl", "2girls", "multiple_girls"}


def test_memos_keep_single_and_multi_character_posts_apart(vocabulary):
    parser = TagParser(vocabulary)
    assert answer(parser, "2girls blonde_hair", "hair_color").confidence <= 0.6
    assert answer(parser, "1girl blonde_hair", "hair_color").confidence >= ACCEPT
    assert answer(parser, "2girls blonde_hair", "hair_color").confidence <= 0.6


# -- weights -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, confidence", [
    ("1girl, [blonde_hair]", 0.5),
    ("1girl, (blonde hair:0.7)", 0.5),
    ("1girl, (blonde_hair:1.4)", 0.9),
    ("1girl, ((blonde_hair))", 0.9),
    ("1girl, blonde_hair", 0.9),
])
def test_de_emphasis_weakens_a_tag_and_emphasis_adds_nothing(parser, raw, confidence):
    est = answer(parser, raw, "hair_color")
    assert est.values == ("blonde",)
    assert est.confidence == pytest.approx(confidence)


@pytest.mark.parametrize("raw", ["1girl, (blonde_hair:0)", "1girl, (blonde_hair:-1)"])
def test_a_weight_of_zero_or_less_drops_the_tag(parser, raw):
    assert answer(parser, raw, "hair_color").is_unknown


def test_a_full_prompt_parses_like_its_tags(parser):
    prompt = "masterpiece, (1girl:1.1), solo, ((long hair)), (red_hair:1.2), [smile], ganyu \\(genshin impact\\)"
    parse = parser.parse(prompt)
    assert parse.character_count == 1
    assert parse.estimates["hair_length"].values == ("long",)
    assert parse.estimates["hair_color"].confidence >= ACCEPT
    assert parse.estimates["expression"].confidence == pytest.approx(0.5)
    assert parse.tag_count == 7


# -- hard cases: no false evidence --------------------------------------------------------------------

HARD_CASES = "1girl solo hair_between_eyes closed_eyes hair_over_one_eye pubic_hair eyes_visible_through_hair " \
             "red_ribbon blue_sky red_hairband long_hair_between_eyes blue_eyeshadow"


def test_tags_that_merely_contain_colour_or_hair_words_are_not_evidence(parser):
    parse = parser.parse(HARD_CASES)
    for key in ("hair_color", "hair_length", "hair_style", "eye_color", "accessories", "expression"):
        assert parse.estimates[key].is_unknown, key
    evidence = {t for e in parse.estimates.values() for t in e.evidence}
    assert evidence == {"1girl"}


def test_hard_cases_do_not_disturb_the_real_answer(parser):
    parse = parser.parse(HARD_CASES + " brown_hair green_eyes")
    assert parse.estimates["hair_color"].values == ("brown",)
    assert parse.estimates["hair_color"].evidence == ("brown_hair",)
    assert parse.estimates["eye_color"].values == ("green",)


# -- inputs, stage, versions -------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    "1girl colored_skin_\\(blue\\)", "1girl, colored skin \\(blue\\)", "1girl, colored skin (blue)",
    "1girl, (colored skin \\(blue\\):1.1)",
])
def test_a_vocabulary_alias_with_parentheses_is_found_in_every_spelling(parser, raw):
    est = answer(parser, raw, "skin_tone")
    assert est.values == ("colored",) and est.evidence == ("colored_skin",)


def test_bytes_and_lists_of_tags_are_accepted(parser):
    assert parser.parse(b"1girl blonde_hair").estimates["hair_color"].values == ("blonde",)
    parse = parser.parse(["1girl", "long hair", "blonde_hair"])
    assert parse.estimates["hair_length"].values == ("long",) and parse.tag_count == 3
    with pytest.raises(TypeError):
        parser.parse(42)


def test_parse_tags_skips_failed_records_and_survives_odd_tags(parser):
    records = [
        ImageRecord("a", "a.png", "s", raw_tags="1girl blonde_hair"),
        ImageRecord("b", "b.png", "s", raw_tags=None, status="failed", error="truncated"),
        ImageRecord(None, "c.png", "s", raw_tags="1girl", status="failed", error="unreadable"),
        ImageRecord("d", "d.png", "s", raw_tags=None),
        ImageRecord("e", "e.png", "s", raw_tags=12345),  # type: ignore[arg-type]  # a bad reader row
    ]
    parses = list(parse_tags(iter(records), parser))
    assert [p.image_id for p in parses] == ["a", "d", "e"]
    assert parses[0].estimates["hair_color"].values == ("blonde",)
    assert all(e.is_unknown for p in parses[1:] for e in p.estimates.values())


def test_parses_serialise_and_round_trip(parser):
    parse = parser.parse("2girls blonde_hair black_hair multicolored_hair smile", "img")
    again = TagParse.from_dict(json.loads(json.dumps(parse.to_dict())))
    assert again == parse


def test_stage_version_names_the_code_and_the_vocabulary(vocabulary):
    assert TAGS_STAGE_VERSION == "tags-2"
    assert tags_stage_version(vocabulary) == f"tags-2+vocab-{vocabulary.fingerprint}"


def test_results_do_not_depend_on_tag_order_or_memo_state(vocabulary, parser):
    raw = "1girl solo blonde_hair black_hair short_hair long_hair smile blush glasses hat bow"
    shuffled = " ".join(reversed(raw.split()))
    assert TagParser(vocabulary).parse(raw) == parser.parse(shuffled)


# -- a user vocabulary -------------------------------------------------------------------------------

USER_VOCABULARY = """
[context]
single_character = ["1girl", "1boy", "solo"]
multi_character = ["2girls", "multiple_girls"]

[attributes.species]
label = "Species"
multi = false
[attributes.species.values.catgirl]
tags = ["cat_ears"]
aliases = ["nekomimi"]
weak_tags = ["cat_tail"]
prompts = ["a cat girl"]
[attributes.species.values.foxgirl]
tags = ["fox_ears"]
prompts = ["a fox girl"]

[attributes.hair_color]
label = "Hair Color"
multi = true
modifiers = ["multicolored_hair"]
[attributes.hair_color.values.red]
tags = ["red_hair"]
prompts = ["red hair"]
[attributes.hair_color.values.white]
tags = ["white_hair"]
prompts = ["white hair"]
"""


def test_a_user_vocabulary_with_a_custom_attribute_works(tmp_path):
    path = tmp_path / "my_attributes.toml"
    path.write_text(USER_VOCABULARY, encoding="utf-8")
    vocabulary = load_vocabulary(path)
    parser = TagParser(vocabulary)

    parse = parser.parse("1girl solo nekomimi red_hair long_hair", "img")
    assert list(parse.estimates) == ["species", "hair_color"]
    assert parse.estimates["species"].values == ("catgirl",)
    assert parse.estimates["species"].evidence == ("cat_ears",)
    assert parse.estimates["species"].confidence >= ACCEPT
    assert parse.character_count == 1

    assert parser.parse("cat_tail").estimates["species"].confidence == pytest.approx(0.5)
    assert parser.parse("cat_ears fox_ears").estimates["species"].confidence < ACCEPT
    assert parser.parse("2girls cat_ears").estimates["species"].confidence <= 0.6
    assert parser.parse("red_hair white_hair multicolored_hair").estimates["hair_color"].confidence >= ACCEPT
    assert tags_stage_version(vocabulary) != tags_stage_version(load_vocabulary())


def test_odd_text_never_breaks_the_splitter_or_the_parser(parser):
    rng = random.Random(7)
    alphabet = list("ab_ :,()[]{}\\\n\t.1") + ["long_hair", "Blonde Hair", "(smile:1.2)", "\\(", ":)",
                                                 "multicolored_hair"]
    for _ in range(2000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        tags = split_tags(raw)
        assert all(t and t == t.lower() and not any(c.isspace() for c in t) for t in tags), raw
        if "," in raw:
            assert all("," not in t for t in tags), raw
        assert len(tags) == len(set(tags))
        parse = parser.parse(raw)
        assert all(0.0 <= e.confidence <= 1.0 for e in parse.estimates.values())
