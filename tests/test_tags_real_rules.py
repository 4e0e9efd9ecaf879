"""The parser's rules on real Danbooru posts (issue 13); skipped when ../shared/data is absent.

One test per rule, on a post that exercises it (its tags quoted in a comment), then the evidence
invariant over every post: each value of an answer names the tags that gave it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from charattr_core.records import FusedAttributes
from charattr_core.schema import UNKNOWN, load_vocabulary
from charattr_core.tags import MULTI_CHARACTER_CAP, TagParser

DATA = Path(os.environ.get("CHARATTR_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
DANBOORU_POSTS = DATA / "posts" / "danbooru_posts.jsonl"
GELBOORU_POSTS = DATA / "posts" / "gelbooru_family_posts.jsonl"
ACCEPT = 0.8

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not DANBOORU_POSTS.is_file(), reason=f"{DANBOORU_POSTS} is absent"),
]


@pytest.fixture(scope="module")
def vocabulary():
    return load_vocabulary()


@pytest.fixture(scope="module")
def parser(vocabulary):
    return TagParser(vocabulary)


@pytest.fixture(scope="module")
def posts() -> dict[str, str]:
    rows = [json.loads(line) for line in DANBOORU_POSTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = {str(row["id"]): row["tag_string"] for row in rows}
    if GELBOORU_POSTS.is_file():
        for line in GELBOORU_POSTS.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out[f"{row['site']}:{row['id']}"] = row.get("tags") or ""
    return out


def parse(parser, posts, post_id):
    tags = posts[post_id].split()
    return parser.parse(posts[post_id], post_id), set(tags)


# -- conflict rules ----------------------------------------------------------------------------------

def test_implication_very_long_hair_is_not_a_conflict_with_long_hair(parser, posts):
    # no counting tags; long_hair very_long_hair red_hair straight_hair hairband
    p, tags = parse(parser, posts, "4018209")
    assert {"long_hair", "very_long_hair"} <= tags
    length = p.estimates["hair_length"]
    assert length.values == ("very_long",) and length.confidence >= ACCEPT and "long" not in length.scores


def test_override_long_hair_over_short_hair_on_a_post_counted_as_one(parser, posts):
    # Seven Umamusume girls, but no counting tag: read as one character, with long_hair short_hair
    p, tags = parse(parser, posts, "6141439")
    assert {"long_hair", "short_hair"} <= tags and p.character_count is None
    length = p.estimates["hair_length"]
    assert length.values == ("long",) and length.evidence == ("long_hair",)
    assert length.confidence < ACCEPT and length.scores["short"] < length.scores["long"]


@pytest.mark.parametrize("post_id, count", [("2434963", 4), ("2541694", 2), ("4018200", 2), ("3283105", 3)])
def test_long_and_short_hair_on_a_group_post_is_unknown_not_short(parser, posts, post_id, count):
    # 4girls / 2girls / 1boy 1girl / 1girl 2boys, each with long_hair short_hair
    p, tags = parse(parser, posts, post_id)
    assert {"long_hair", "short_hair"} <= tags and p.character_count == count
    length = p.estimates["hair_length"]
    assert length.values == (UNKNOWN,) and length.confidence == 0.0
    assert {"short", "long"} <= set(length.scores) and max(length.scores.values()) <= MULTI_CHARACTER_CAP


@pytest.mark.parametrize("post_id, evidence", [
    ("4018200", {"1boy", "1girl"}), ("3283105", {"1girl", "2boys", "multiple_boys"}),
    ("6141477", {"1boy", "2girls", "multiple_girls"}),
])
def test_girls_and_boys_together_are_mixed(parser, posts, post_id, evidence):
    p, _ = parse(parser, posts, post_id)
    gender = p.estimates["gender"]
    assert gender.values == ("mixed",) and gender.confidence >= ACCEPT and set(gender.evidence) == evidence


@pytest.mark.parametrize("post_id, count", [("2541694", 2), ("6141700", 3)])
def test_girls_only_group_posts_are_female_with_their_count(parser, posts, post_id, count):
    # 2girls multiple_girls / multiple_girls without a number
    p, _ = parse(parser, posts, post_id)
    assert p.character_count == count
    assert p.estimates["gender"].values == ("female",) and p.estimates["gender"].confidence >= ACCEPT


# -- tags that name no value -------------------------------------------------------------------------

def test_open_mouth_alone_is_not_surprise(parser, posts):
    # 1girl ... open_mouth, no other expression tag
    p, tags = parse(parser, posts, "2434949")
    assert "open_mouth" in tags
    assert p.estimates["expression"].is_unknown


@pytest.mark.parametrize("post_id, clothing", [
    ("2434960", ()),  # hatsune_miku: a Vocaloid costume with a necktie
    ("3153215", ("school_uniform",)),  # school_uniform necktie
])
def test_a_necktie_is_an_accessory_not_formal_wear(parser, posts, post_id, clothing):
    p, tags = parse(parser, posts, post_id)
    assert "necktie" in tags
    assert "formal" not in p.estimates["clothing"].scores
    assert tuple(v for v in p.estimates["clothing"].values if v != UNKNOWN) == clothing
    assert "necktie" in p.estimates["accessories"].values


def test_a_china_dress_is_chinese_traditional_dress(parser, posts):
    # 1girl solo china_dress chinese_clothes dress sleeveless_dress
    p, _ = parse(parser, posts, "2434947")
    clothing = p.estimates["clothing"]
    assert "chinese_traditional" in clothing.values and "japanese_traditional" not in clothing.scores
    assert {"china_dress", "chinese_clothes"} <= set(clothing.evidence)


def test_blunt_bangs_add_nothing_to_twintails(parser, posts):
    # 1girl solo blonde_hair pink_hair blue_hair twintails blunt_bangs serafuku
    p, tags = parse(parser, posts, "6141155")
    assert {"twintails", "blunt_bangs"} <= tags
    style = p.estimates["hair_style"]
    assert style.values == ("twintails",) and style.evidence == ("twintails",) and set(style.scores) == {"twintails"}


def test_the_seed_dict_of_a_twintail_post_reads_twintails_first(parser, vocabulary, posts):
    p, _ = parse(parser, posts, "6141155")
    row = FusedAttributes(p.image_id, p.estimates, "tag_priority")
    assert row.to_dict(vocabulary)["Hair Style"][0] == "twintails"
    assert row.to_dict()["Hair Style"] == "twintails"


# -- every value names its tags ----------------------------------------------------------------------

def test_every_value_of_every_answer_names_the_tags_that_gave_it(parser, vocabulary, posts):
    values_of = {tag: {(h.attribute, h.value) for h in hits} for tag, hits in vocabulary.tag_index.items()}
    canonical = {h.canonical_tag for hits in vocabulary.tag_index.values() for h in hits}
    checked = 0
    for post_id, raw in posts.items():
        p = parser.parse(raw, post_id)
        for key, est in p.estimates.items():
            if est.is_unknown:
                continue
            attribute = vocabulary.attribute(key)
            named = {}  # value -> its evidence tags
            for tag in est.evidence:
                if tag in attribute.modifiers:
                    continue  # a modifier explains a combination, it names no value
                assert tag in canonical, (post_id, key, tag)
                for attr, value in values_of.get(tag, ()):
                    if attr == key:
                        named.setdefault(value, []).append(tag)
            for value in est.values:
                if value == getattr(attribute, "mixed_value", None):  # stated by counting tags of different values
                    assert len(named) >= 2, (post_id, key, est.evidence)
                else:
                    assert named.get(value), (post_id, key, value, est.evidence)
                checked += 1
            # and no evidence tag speaks for a value the tags did not score
            if getattr(attribute, "mixed_value", None) not in est.values:
                assert set(named) <= set(est.values) | set(est.scores), (post_id, key, named, est.values)
    assert checked > 3000  # all posts, not a few


def test_every_fused_value_from_the_tags_alone_names_its_tags(parser, vocabulary, posts):
    # Fusion pools score vectors: a weak tag's score (`blunt_bangs` -> straight 0.5 once) can make a
    # value of the fused answer, so the tags behind every scored value must be in the evidence.
    from charattr_core.config import ALL_STRATEGIES
    from charattr_core.fusion import fuse

    values_of = {tag: {(h.attribute, h.value) for h in hits} for tag, hits in vocabulary.tag_index.items()}
    for post_id, raw in posts.items():
        p = parser.parse(raw, post_id)
        for strategy in ALL_STRATEGIES:
            row = fuse(post_id, {"tags": p}, vocabulary, strategy=strategy)
            for key, est in row.attributes.items():
                mixed = vocabulary.attribute(key).mixed_value
                for value in est.values:
                    if value in (UNKNOWN, mixed):
                        continue
                    assert any((key, value) in values_of.get(t, ()) for t in est.evidence), \
                        (post_id, strategy, key, value, est.evidence)
