"""Danbooru tag parsing: what a post's tags say about each attribute (the `tag_parses` stage).

`TagParser(vocabulary).parse(raw_tags, image_id)` turns a tag text (Danbooru `tag_string`,
a comma-separated list, or a prompt with weights; see `charattr_core.tag_syntax`) into a
`TagParse`: one `AttributeEstimate` per attribute of the vocabulary, with the values, a
confidence, the evidence (canonical tags) and per-value scores. Attributes the tags say nothing
about are `("unknown",)` with confidence 0. `tag_count` is the number of tags as written (a
repeated tag counts each time; Danbooru tag strings never repeat one).

Only exact tags of the vocabulary count (aliases resolved to their canonical tag by
`schema.Vocabulary.tag_index`); there is no substring matching, so `hair_between_eyes`,
`closed_eyes`, `pubic_hair`, `red_ribbon` or `blue_sky` are never evidence.

Confidence model (constants below)
----------------------------------
1. Each tag gives its value a strength: `STRONG_TAG` (0.9) for a tag that states the value,
   `WEAK_TAG` (0.5) for a `weak_tags` entry that only suggests it. A prompt weight below 1
   (`[blonde_hair]`, `(blonde_hair:0.7)`) turns a tag weak: de-emphasis means "a little of this",
   which may not be visible. A weight of 0 or less drops the tag; weights above 1 add nothing
   (emphasis says what the author wanted, not that it shows more).
2. A value's support is the noisy-or of the strengths of its distinct canonical tags, capped at
   `MAX_TAG_CONFIDENCE` (tags are human input and never certain). Danbooru's tag implications
   (the vocabulary's `[implications]`: `very_long_hair` implies `long_hair`) are applied
   first, so a tag that is only there because a more precise one implies it does not create a
   conflict.
   Overrides (`[[attributes.KEY.overrides]]`, one character only) settle a known pair of
   conflicting tags the way a person reads it: `long_hair` beside `short_hair` is long hair
   (short hair with long locks), so `short_hair` becomes dissent and the answer costs
   `OVERRIDE_PENALTY` on top of the dissent penalty: right, but not beyond doubt.
3. Candidates are the values with a strong tag; when there are none, the values with weak tags.
   Weak-only values next to a strong candidate are dissent: they stay visible in `scores`.
4. Single-valued attributes (hair length, gender, ...): each candidate gets
   `support * support / sum(candidate supports)` (its support times its share), so one strong
   tag gives 0.9, two strong tags for different values split to 0.45 each, and the answer is
   the best candidate (vocabulary order breaks ties). Each weak dissenter costs
   `DISSENT_PENALTY`; the dissenters share the probability the candidates leave, in
   proportion to their support, so the scores stay a (sub-)distribution.
5. Multi-valued attributes: candidates are independent (score = support) and the confidence is
   the smallest score among the answered values. Weak values beside them keep their scores, and
   their tags close the evidence (fusion may name them, and every value it names has its tags).
   Attributes that declare `modifiers` (hair colour, eye colour) expect one value per
   character; there, several values are a legitimate answer only when a modifier
   (`multicolored_hair`, `heterochromia`, ...) or a multi-character post explains them;
   unexplained, every value keeps only
   `UNEXPLAINED_COMBINATION_FACTOR` of its support. A modifier with a single named value
   (`multicolored_hair pink_hair`) means the answer is incomplete: `INCOMPLETE_COMBINATION_FACTOR`.
6. Posts with several characters (`character_count > 1`): tags describe the whole post, so which
   character has which attribute is unknown; confidence and scores are capped at
   `MULTI_CHARACTER_CAP` (never a confident answer). A single-valued attribute whose tags name
   several values (`long_hair short_hair` on `2girls`) is `unknown`: each character has one of
   them, nobody knows which (the scores keep them). Exceptions: a single value that a
   multi-character counting tag itself states (`2girls` -> female) holds for every character,
   and where the counting tags state different values (`1boy 1girl`) the attribute's
   `mixed_value` (gender: `mixed`) is the answer, with the counting tags as evidence.
7. `character_count` comes from the counting tags of the vocabulary's context: `1girl`=1,
   `2girls`=2, `6+girls`=6, `1boy 1girl`=2 (counts add up across girls/boys/others); a
   `multiple_girls` without a numbered tag of the same kind counts `UNCOUNTED_MULTIPLE` (3):
   Danbooru adds `multiple_girls` to every `2girls` post, so without the number the group was
   not counted, and it is usually larger; `group`/`crowd` mean at least `UNCOUNTED_MULTIPLE`;
   `solo` alone means 1; no counting tag gives None.

Speed
-----
Everything that depends only on the vocabulary is computed once in `TagParser.__init__`: every
known tag owns bits in one Python int, each attribute's tags a mask of it. A post is split with
str methods (the character scanner only runs for prompt syntax), its known tags OR-ed into one
int, and each attribute's masked bits key a memo of finished estimates. Estimates are therefore
shared between parses (and the unknown ones always are): treat them as read-only values and
copy (`dataclasses.replace`) before changing one.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from functools import reduce
from operator import or_
from typing import Iterable, Iterator, Sequence

from .records import AttributeEstimate, ImageRecord, TagParse
from .schema import UNKNOWN, Attribute, TagHit, Vocabulary
from .tag_syntax import needs_scan, split_plain, split_tags, split_weighted_tags

__all__ = [
    "TAGS_STAGE_VERSION", "TagParser", "parse_tags", "split_tags", "split_weighted_tags", "tags_stage_version",
    "STRONG_TAG", "WEAK_TAG", "MAX_TAG_CONFIDENCE", "DISSENT_PENALTY", "UNEXPLAINED_COMBINATION_FACTOR",
    "INCOMPLETE_COMBINATION_FACTOR", "MULTI_CHARACTER_CAP", "UNCOUNTED_MULTIPLE", "OVERRIDE_PENALTY",
]

log = logging.getLogger(__name__)

TAGS_STAGE_VERSION = "tags-2"  # 2: implications/overrides from the vocabulary, mixed and unknown on group posts

STRONG_TAG = 0.9  # a tag that states the value
WEAK_TAG = 0.5  # a weak tag, or a tag de-emphasised by a prompt weight below 1
MAX_TAG_CONFIDENCE = 0.95  # tags are human input: never certain
DISSENT_PENALTY = 0.05  # per weak-only value that disagrees with a strong answer
UNEXPLAINED_COMBINATION_FACTOR = 0.6  # two hair colours on one character, no `multicolored_hair`
INCOMPLETE_COMBINATION_FACTOR = 0.85  # `multicolored_hair` but only one colour named
MULTI_CHARACTER_CAP = 0.6  # several characters: which one has the attribute is unknown
UNCOUNTED_MULTIPLE = 3  # `multiple_girls` / `group` without a number
OVERRIDE_PENALTY = 0.1  # per value an override rule turned into dissent: the tags did disagree

_MISSING = object()
_COUNT_TAG = re.compile(r"^(\d+)\+?(girl|boy|other)s?$")
_MULTIPLE_TAG = re.compile(r"^multiple_(girl|boy|other)s?$")


def tags_stage_version(vocabulary: Vocabulary) -> str:
    """The cache key part of the `tag_parses` stage: code version plus vocabulary fingerprint."""
    return f"{TAGS_STAGE_VERSION}+vocab-{vocabulary.fingerprint}"


@dataclass(frozen=True, slots=True)
class _CountTag:
    """What a context tag says about the number of characters."""

    kind: str | None  # "girl", "boy", "other"; None for `solo`, `group`, ...
    count: int | None  # None: several, not counted (`multiple_girls`, `group`)


class TagParser:
    """Parses tag texts against one vocabulary. Build once per vocabulary and reuse: it memoises
    finished estimates (memo writes are idempotent, so sharing one between threads is safe)."""

    MEMO_LIMIT = 200_000  # finished estimates kept per parser; cleared when full

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self._attributes: tuple[Attribute, ...] = vocabulary.attributes
        self._value_order = [{name: k for k, name in enumerate(a.value_names)} for a in self._attributes]

        # Per attribute: tag -> what it says about that attribute, and the modifier tags.
        self._hits: list[dict[str, tuple[TagHit, ...]]] = [{} for _ in self._attributes]
        position = {a.key: i for i, a in enumerate(self._attributes)}
        for tag, hits in vocabulary.tag_index.items():
            for hit in hits:
                table = self._hits[position[hit.attribute]]
                table[tag] = table.get(tag, ()) + (hit,)
        self._modifiers = [frozenset(a.modifiers) for a in self._attributes]
        # Implications: implied tag -> the tags that imply it. The implying tags get bits in every
        # attribute where the implied tag is evidence, so their presence is seen there.
        implied_by: dict[str, set[str]] = {}
        for tag, implied in vocabulary.implications.items():
            for target in implied:
                implied_by.setdefault(target, set()).add(tag)
        self._implied_by = {t: frozenset(by) for t, by in implied_by.items()}
        self._implying = [frozenset(by for tag in table for hit in table[tag]
                                    for by in self._implied_by.get(hit.canonical_tag, ()))
                          for table in self._hits]
        self._overrides = [tuple((o.tag, frozenset(o.over)) for o in a.overrides) for a in self._attributes]

        # Counting tags, with the context aliases pointing at what they stand for.
        self._count_tags: dict[str, _CountTag] = {}
        for tag in vocabulary.single_character_tags | vocabulary.multi_character_tags:
            self._count_tags[tag] = _count_tag(tag, tag in vocabulary.multi_character_tags)
        for alias, target in vocabulary.context_aliases.items():
            if target in self._count_tags:
                self._count_tags.setdefault(alias, self._count_tags[target])
        # Tags that count several characters by a value (`2girls` -> female).
        self._group_count_tags = frozenset(
            tag for tag, count_tag in self._count_tags.items() if count_tag.count != 1)

        # One bit per (tag, attribute) and per counting tag; a tag's bits are all of those.
        self._bits: dict[str, int] = {}
        self._tag_of_bit: dict[int, str] = {}
        attribute_masks: list[tuple[str, int, int]] = []  # (key, index, mask)
        next_bit = 0
        for i, attribute in enumerate(self._attributes):
            mask = 0
            for tag in sorted(set(self._hits[i]) | self._modifiers[i] | self._implying[i]):
                bit = 1 << next_bit
                next_bit += 1
                self._bits[tag] = self._bits.get(tag, 0) | bit
                self._tag_of_bit[bit] = tag
                mask |= bit
            attribute_masks.append((attribute.key, i, mask))
        self._context_mask = 0
        for tag in sorted(self._count_tags):
            bit = 1 << next_bit
            next_bit += 1
            self._bits[tag] = self._bits.get(tag, 0) | bit
            self._tag_of_bit[bit] = tag
            self._context_mask |= bit
        self._known = frozenset(self._bits)
        self._bits_of = self._bits.__getitem__

        # Shared, never-mutated "the tags say nothing" estimates, and the memos.
        self._unknown_estimates = {a.key: AttributeEstimate(a.key) for a in self._attributes}
        # The fast path's loop: (key, mask, memo of finished estimates, index) per attribute;
        # one list for posts with one character (or none counted), one for several.
        self._slots = tuple([(key, mask, {}, i) for key, i, mask in attribute_masks] for _ in (False, True))
        self._weighted_memo: dict[tuple[int, int, int, bool], AttributeEstimate] = {}
        self._count_memo: dict[int, int | None] = {0: None}

    # -- public ---------------------------------------------------------------------------------

    def parse(self, raw_tags: str | bytes | Sequence[str] | None, image_id: str = "") -> TagParse:
        """What the tags of one image say about every attribute of the vocabulary.

        `raw_tags` is a tag text (any format `split_tags` reads), bytes in UTF-8, a list of tags,
        or None. Never raises for odd text; raises `TypeError` for other types.
        """
        if not raw_tags:
            return TagParse(image_id, self._unknown_estimates.copy(), 0, None)
        if type(raw_tags) is not str:
            raw_tags = _as_text(raw_tags)
        # Most Danbooru posts have brackets only inside tags (`bat_(animal)`): when every `(`
        # follows an underscore and there is no other bracket, no tag can start with one.
        if ("[" in raw_tags or "{" in raw_tags or ("(" in raw_tags and raw_tags.count("(") != raw_tags.count("_("))) \
                and needs_scan(raw_tags):
            return self._parse_weighted(raw_tags, image_id)
        if "," in raw_tags or "\\" in raw_tags:
            tags = split_plain(raw_tags)
        else:
            tags = raw_tags.lower().split()
        present = self._known.intersection(tags)
        if not present:
            return TagParse(image_id, self._unknown_estimates.copy(), len(tags), None)
        mask = reduce(or_, map(self._bits_of, present))
        context = mask & self._context_mask
        count = self._count_memo.get(context, _MISSING)
        if count is _MISSING:
            count = self._character_count(context)
        several = count is not None and count > 1
        estimates = self._unknown_estimates.copy()
        for key, attribute_mask, memo, i in self._slots[several]:
            bits = mask & attribute_mask
            if bits:
                estimate = memo.get(bits)
                if estimate is None:
                    estimate = self._remember(memo, bits, self._resolve(i, bits, 0, several))
                estimates[key] = estimate
        return TagParse(image_id, estimates, len(tags), count)

    @property
    def memo_entries(self) -> int:
        """How many finished estimates the parser keeps (each at most `MEMO_LIMIT` per memo)."""
        return sum(len(memo) for slots in self._slots for _, _, memo, _ in slots) + len(self._weighted_memo)

    def character_count(self, raw_tags: str | None) -> int | None:
        """How many characters the counting tags of a tag text announce (None: they do not say)."""
        mask = reduce(or_, (self._bits[t] for t in split_tags(raw_tags) if t in self._bits), 0)
        return self._character_count(mask & self._context_mask)

    # -- internals ------------------------------------------------------------------------------

    def _parse_weighted(self, raw_tags: str, image_id: str) -> TagParse:
        """The slow path for prompt syntax: weights below 1 weaken a tag, 0 or less drop it."""
        pairs = split_weighted_tags(raw_tags, keep_repeats=True)
        weights: dict[str, float] = {}  # a repeated tag counts with its largest weight
        for tag, weight in pairs:
            if tag in self._bits and weight > weights.get(tag, -math.inf):
                weights[tag] = weight
        mask = weakened = 0
        for tag, weight in weights.items():
            if weight > 0:
                mask |= self._bits[tag]
                if weight < 1:
                    weakened |= self._bits[tag]
        count = self._character_count(mask & self._context_mask)
        several = count is not None and count > 1
        estimates = self._unknown_estimates.copy()
        for key, attribute_mask, _, i in self._slots[False]:
            bits = mask & attribute_mask
            if bits:
                weak_bits = weakened & attribute_mask
                memo_key = (i, bits, weak_bits, several)
                estimate = self._weighted_memo.get(memo_key)
                if estimate is None:
                    estimate = self._remember(self._weighted_memo, memo_key,
                                              self._resolve(i, bits, weak_bits, several))
                estimates[key] = estimate
        return TagParse(image_id, estimates, len(pairs), count)

    def _remember(self, memo: dict, key: object, estimate: AttributeEstimate) -> AttributeEstimate:
        if len(memo) >= self.MEMO_LIMIT:
            memo.clear()
        memo[key] = estimate
        return estimate

    def _tags_of(self, bits: int) -> list[str]:
        tags = []
        while bits:
            low = bits & -bits
            tags.append(self._tag_of_bit[low])
            bits ^= low
        return tags

    def _character_count(self, context_bits: int) -> int | None:
        count = self._count_memo.get(context_bits, _MISSING)
        if count is _MISSING:
            count = _count_characters([self._count_tags[t] for t in self._tags_of(context_bits)])
            self._remember(self._count_memo, context_bits, count)
        return count

    def _resolve(self, i: int, bits: int, weak_bits: int, several: bool) -> AttributeEstimate:
        """The estimate for attribute `i` given its tags present (`bits`), those de-emphasised
        (`weak_bits`) and whether the post has several characters. Memoised by the caller."""
        attribute = self._attributes[i]
        hits = self._hits[i]
        weakened = set(self._tags_of(weak_bits))
        strengths: dict[str, dict[str, float]] = {}  # value -> canonical tag -> strength
        modifiers: list[str] = []
        stated_for_everyone: set[str] = set()  # values stated by a tag like `2girls`
        stated_by_count: dict[str, list[str]] = {}  # value -> the counting tags that state it
        present = self._tags_of(bits)
        for tag in present:
            if tag in self._modifiers[i]:
                modifiers.append(tag)
            for hit in hits.get(tag, ()):
                if tag in self._group_count_tags:
                    stated_for_everyone.add(hit.value)
                if tag in self._count_tags:
                    stated_by_count.setdefault(hit.value, []).append(hit.canonical_tag)
                strength = WEAK_TAG if hit.weak or tag in weakened else STRONG_TAG
                per_tag = strengths.setdefault(hit.value, {})
                per_tag[hit.canonical_tag] = max(per_tag.get(hit.canonical_tag, 0.0), strength)
        self._apply_implications(strengths, present)
        if not strengths:
            return self._unknown_estimates[attribute.key]
        if several and attribute.mixed_value and len(stated_by_count) > 1:
            return self._mixed(attribute, strengths, stated_by_count)
        overridden = set() if several else self._apply_overrides(i, strengths)

        order = self._value_order[i]
        support = {v: min(MAX_TAG_CONFIDENCE, 1.0 - math.prod(1.0 - s for s in per.values()))
                   for v, per in strengths.items()}
        strong = [v for v, per in strengths.items() if STRONG_TAG in per.values()]
        candidates = sorted(strong or support, key=order.__getitem__)
        dissent = sorted((v for v in support if v not in candidates), key=order.__getitem__)

        if attribute.multi:
            scores = {v: support[v] for v in support}
            if attribute.modifiers and not several:
                if len(candidates) > 1 and not modifiers:
                    scores.update({v: support[v] * UNEXPLAINED_COMBINATION_FACTOR for v in candidates})
                elif len(candidates) == 1 and modifiers:
                    scores[candidates[0]] *= INCOMPLETE_COMBINATION_FACTOR
            values = tuple(sorted(candidates, key=lambda v: (-scores[v], order[v])))
            confidence = min(scores[v] for v in values)
        else:
            total = sum(support[v] for v in candidates)
            scores = {v: support[v] * support[v] / total for v in candidates}
            # Dissenters share what the candidates leave, in proportion to their support.
            left_over = max(0.0, 1.0 - sum(scores.values()))
            dissent_total = max(1.0, sum(support[v] for v in dissent))
            scores.update({v: left_over * support[v] / dissent_total for v in dissent})
            best = max(candidates, key=lambda v: (scores[v], -order[v]))
            values = (best,)
            confidence = max(0.0, scores[best] - DISSENT_PENALTY * len(dissent)
                             - OVERRIDE_PENALTY * len(overridden & set(dissent)))
            if several and len(candidates) > 1:
                # Each character has one of the values; which one is not in the tags.
                capped = {v: round(min(s, MULTI_CHARACTER_CAP), 4)
                          for v, s in sorted(scores.items(), key=lambda kv: order[kv[0]])}
                return AttributeEstimate(attribute.key, (UNKNOWN,), 0.0, (), capped)

        # A counting tag (`2girls`) speaks for every character; anything else on a post with
        # several characters might belong to any of them.
        if several and not (len(support) == 1 and values[0] in stated_for_everyone):
            confidence = min(confidence, MULTI_CHARACTER_CAP)
            scores = {v: min(s, MULTI_CHARACTER_CAP) for v, s in scores.items()}

        evidence = [tag for v in values
                    for tag in sorted(strengths[v], key=lambda t: (-strengths[v][t], t))]
        if attribute.multi:
            evidence.extend(sorted(modifiers))  # they explain (or qualify) the combination
            # Weak values beside the answer keep their scores, and fusion names every value whose
            # pooled score is high enough: the tags behind them must be in the evidence too.
            evidence.extend(tag for v in dissent for tag in sorted(strengths[v]))
        ordered_scores = {v: round(scores[v], 4) for v in sorted(scores, key=order.__getitem__)}
        return AttributeEstimate(attribute.key, values, round(confidence, 4), tuple(evidence), ordered_scores)

    def _apply_implications(self, strengths: dict[str, dict[str, float]], present: list[str]) -> None:
        """Drop canonical tags implied by a more precise tag that is also present (in place);
        the implying tag may be written as an alias (`hair_past_waist` for `very_long_hair`)."""
        if not self._implied_by:
            return
        present_set = set(present).union(*(per.keys() for per in strengths.values()))
        for value in list(strengths):
            per = strengths[value]
            for tag in [t for t in per if not present_set.isdisjoint(self._implied_by.get(t, ()))]:
                del per[tag]
            if not per:
                del strengths[value]

    def _apply_overrides(self, i: int, strengths: dict[str, dict[str, float]]) -> set[str]:
        """Turn the tags an override rule beats into weak dissent (in place); the values they
        made candidates, as far as no other strong tag keeps them candidates."""
        if not self._overrides[i]:
            return set()
        canonical = {tag for per in strengths.values() for tag in per}
        beaten = {t for winner, over in self._overrides[i] if winner in canonical for t in over & canonical}
        if not beaten:
            return set()
        for per in strengths.values():
            for tag in beaten & per.keys():
                per[tag] = min(per[tag], WEAK_TAG)
        return {v for v, per in strengths.items() if beaten & per.keys() and STRONG_TAG not in per.values()}

    def _mixed(self, attribute: Attribute, strengths: dict[str, dict[str, float]],
               stated_by_count: dict[str, list[str]]) -> AttributeEstimate:
        """Counting tags state different values (`1boy 1girl`): the post is mixed, as sure as the
        least sure of those tags; the evidence is the counting tags."""
        confidence = min(min(MAX_TAG_CONFIDENCE, max(strengths.get(v, {}).values(), default=STRONG_TAG))
                         for v in stated_by_count)
        evidence = tuple(sorted({t for tags in stated_by_count.values() for t in tags}))
        return AttributeEstimate(attribute.key, (attribute.mixed_value,), round(confidence, 4), evidence,
                                 {attribute.mixed_value: round(confidence, 4)})


def parse_tags(records: Iterable[ImageRecord], parser: TagParser) -> Iterator[TagParse]:
    """The `tag_parses` stage: one `TagParse` per usable image record, streaming.

    Failed records (and records without an image id) are skipped. A record whose tags are not
    text is parsed as having no tags and logged; it never stops the batch.
    """
    for record in records:
        if not record.ok or not record.image_id:
            continue
        try:
            yield parser.parse(record.raw_tags, record.image_id)
        except TypeError as exc:
            log.warning("Image %s has unusable tags (%s); parsing it as untagged.", record.image_id, exc)
            yield parser.parse(None, record.image_id)


# -- helpers --------------------------------------------------------------------------------------

def _as_text(raw: object) -> str:
    """Tags given as bytes or as a list of tags, as one comma-separated text."""
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).decode("utf-8", errors="replace")
    if isinstance(raw, (list, tuple)) and all(isinstance(t, str) for t in raw):
        # Comma-joined so that tags written with spaces ("long hair") stay one tag each.
        return ", ".join(raw)
    raise TypeError(f"tags must be text, UTF-8 bytes or a list of strings, not {type(raw).__name__}")


def _count_tag(tag: str, several: bool) -> _CountTag:
    numbered = _COUNT_TAG.match(tag)
    if numbered:
        return _CountTag(numbered.group(2), int(numbered.group(1)))
    multiple = _MULTIPLE_TAG.match(tag)
    if multiple:
        return _CountTag(multiple.group(1), None)
    return _CountTag(None, None if several else 1)


def _count_characters(tags: Iterable[_CountTag]) -> int | None:
    """Add up the counting tags of one post (rules in the module docstring, point 7)."""
    numbered: dict[str, int] = {}
    uncounted_kinds: set[str] = set()
    single = several = False
    for tag in tags:
        if tag.kind is not None and tag.count is not None:
            numbered[tag.kind] = max(numbered.get(tag.kind, 0), tag.count)
        elif tag.kind is not None:
            uncounted_kinds.add(tag.kind)
        elif tag.count == 1:
            single = True
        else:
            several = True
    total = sum(numbered.values()) + UNCOUNTED_MULTIPLE * len(uncounted_kinds - numbered.keys())
    if several:
        total = max(total, UNCOUNTED_MULTIPLE)
    if total == 0 and single:
        total = 1
    return total or None
