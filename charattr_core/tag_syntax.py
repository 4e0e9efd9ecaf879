"""Splitting a tag text into normalised Danbooru tags, with prompt-style weights.

Accepted inputs (one function reads them all):

- Danbooru `tag_string`: tags separated by whitespace, underscores inside tags, parentheses that
  belong to the tag (`bat_(animal)`, `ganyu_(genshin_impact)`, `>:)`).
- Comma-separated lists, tags written with spaces or underscores (`long hair, red_eyes`). When
  the text contains a comma, commas and newlines separate tags and the spaces inside a tag
  become underscores; without a comma, whitespace separates tags.
- Prompt syntax from Stable Diffusion front ends: `(tag)` x1.1, `((tag))` x1.21, `{tag}` x1.05
  (NovelAI), `[tag]` /1.1, `(tag:1.3)` explicit weight, `(a, b:0.8)` a group of tags, and the
  escapes `\\(` `\\)` `\\[` `\\]` `\\{` `\\}` for literal brackets (`ganyu \\(genshin impact\\)`).

A bracket counts as prompt syntax only where a tag starts (at the start of the text or after a
separator or another opening bracket); elsewhere it is part of the tag, so Danbooru's own
`bat_(animal)` and unescaped prompt spellings such as `ganyu (genshin impact)` both come out as
one tag. A closing bracket without its opening one is literal (`:)`, `>:)`). Danbooru has no tag
that starts with a bracket, so this reading never breaks a real tag. Texts without such a
bracket (escaped brackets are just literal ones) never reach the scanner: they are split with
str methods, which is what keeps the parser fast.

Every tag is normalised like `charattr_core.schema.normalize_tag` (lower case, blanks to single
underscores, no surrounding blanks); empty tags are dropped and repeats kept once, in the place
of their first occurrence (with the larger weight).
"""

from __future__ import annotations

import re

# The multiplier of each kind of bracket group when no explicit `:weight` is given (the
# AUTOMATIC1111 / NovelAI conventions).
EMPHASIS = 1.1
DE_EMPHASIS = 1 / 1.1
BRACE_EMPHASIS = 1.05
_GROUP_MULTIPLIER = {"(": EMPHASIS, "[": DE_EMPHASIS, "{": BRACE_EMPHASIS}
_CLOSER = {"(": ")", "[": "]", "{": "}"}
_OPENERS = frozenset("([{")

_UNESCAPE = tuple(("\\" + c, c) for c in "()[]{}")
_EXPLICIT_WEIGHT = re.compile(r"^(.*\S)\s*:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$", re.DOTALL)
_BLANKS = re.compile(r"\s+")
# The scanner reads the pieces between separators that hold a bracket token by token: an
# escaped bracket, a bracket, or a run of other text (a lone backslash is ordinary text too).
_HAS_BRACKET = re.compile(r"[()\[\]{}]").search
_TOKENS = re.compile(r"(?P<escaped>\\[()\[\]{}])|(?P<bracket>[()\[\]{}])|(?P<text>[^()\[\]{}\\]+|\\)")


def split_tags(raw: str | None) -> list[str]:
    """The normalised tags of a tag text, in order, without empties or repeats (weights dropped)."""
    if not raw:
        return []
    if not needs_scan(raw):
        return list(dict.fromkeys(split_plain(raw)))
    return [tag for tag, _ in _dedupe(_scan(raw, "," in raw))]


def split_weighted_tags(raw: str | None, keep_repeats: bool = False) -> list[tuple[str, float]]:
    """The normalised tags of a tag text with their prompt weights (1.0 where none is given).

    A repeated tag is kept once with the largest of its weights, unless `keep_repeats`.
    """
    if not raw:
        return []
    comma_mode = "," in raw
    if not needs_scan(raw):
        tags = split_plain(raw, comma_mode)
        return [(tag, 1.0) for tag in (tags if keep_repeats else dict.fromkeys(tags))]
    pairs = _scan(raw, comma_mode)
    return pairs if keep_repeats else _dedupe(pairs)


def needs_scan(text: str, comma_mode: bool | None = None) -> bool:
    """Whether `text` holds prompt syntax: an unescaped bracket where a tag starts.

    A tag starts at the beginning of the text and after a separator: a comma or newline
    (blanks may follow) in comma mode, any blank otherwise; `comma_mode=None` decides from the
    text. This runs for every post, so it looks only at the character(s) before each bracket,
    found with `str.find`: far cheaper than a regex search over the whole post.
    """
    if comma_mode is None:
        comma_mode = "," in text
    for opener in "([{":
        at = text.find(opener)
        while at != -1:
            if _starts_tag(text, at, comma_mode):  # an escaped bracket follows `\`: never
                return True
            at = text.find(opener, at + 1)
    return False


def _starts_tag(text: str, at: int, comma_mode: bool) -> bool:
    """Whether position `at` is where a tag starts (only blanks between it and a separator)."""
    if not comma_mode:
        return at == 0 or text[at - 1].isspace()
    k = at - 1
    while k >= 0 and text[k] in " \t\r\f\v":
        k -= 1
    return k < 0 or text[k] in ",\n"


def split_plain(raw: str, comma_mode: bool | None = None) -> list[str]:
    """Split a text without prompt syntax (see `needs_scan`; the fast path); repeats are kept.

    `comma_mode=None` decides from the text: commas present means comma-separated.
    """
    text = raw.lower()
    if comma_mode is None:
        comma_mode = "," in text
    if "\\" in text:  # escaped brackets are literal brackets (no syntax reaches this path)
        for escaped, bracket in _UNESCAPE:
            text = text.replace(escaped, bracket)
    if not comma_mode:
        return text.split()
    # One pass of C-level string operations instead of a Python loop over tags: newlines
    # separate like commas, blank runs become one underscore, blanks next to commas vanish.
    text = _BLANKS.sub(" ", text.replace("\n", ",")).replace(" ,", ",").replace(", ", ",")
    return [tag for tag in text.strip(" ,").replace(" ", "_").split(",") if tag]


def _scan(raw: str, comma_mode: bool) -> list[tuple[str, float]]:
    """Scanner for texts with prompt syntax; returns (tag, weight) pairs, repeats kept.

    Separators are never escaped and never inside a tag, so the text is cut at them first (in
    C); only the pieces that hold a bracket are read token by token. Bracket groups may span
    pieces (`(a, b:0.8)`), so the open groups are carried from one piece to the next.
    """
    tags: list[str] = []
    weights: list[float] = []
    # Open brackets: (opening char, index of the first tag inside, is prompt syntax). Literal
    # brackets are tracked only so that their closing partner stays literal too.
    stack: list[tuple[str, int, bool]] = []
    pieces = raw.replace("\n", ",").split(",") if comma_mode else raw.split()
    for piece in pieces:
        if _HAS_BRACKET(piece) is None:
            tag = "_".join(piece.lower().split())
            if tag:
                tags.append(tag)
                weights.append(1.0)
            continue
        parts: list[str] = []  # the tag being read
        for token in _TOKENS.finditer(piece):
            kind, text = token.lastgroup, token.group()
            if kind == "text":
                parts.append(text)
            elif kind == "escaped":
                parts.append(text[1])
            elif text in _OPENERS:
                if not "".join(parts).strip():  # where a tag starts: prompt syntax
                    parts.clear()
                    stack.append((text, len(tags), True))
                else:
                    parts.append(text)
                    stack.append((text, -1, False))
            elif stack and _CLOSER[stack[-1][0]] == text:
                opener, first, syntax = stack.pop()
                if not syntax:
                    parts.append(text)
                    continue
                multiplier = _GROUP_MULTIPLIER[opener]
                explicit = _EXPLICIT_WEIGHT.match("".join(parts))
                if explicit:
                    parts[:] = [explicit.group(1)]
                    multiplier = float(explicit.group(2))
                _add(tags, weights, parts)
                for k in range(first, len(tags)):
                    weights[k] *= multiplier
            else:
                parts.append(text)  # a closing bracket nobody opened (`:)`, `>:)`)
        _add(tags, weights, parts)
        # A literal bracket never spans tags: forget the unclosed ones of this piece.
        while stack and not stack[-1][2]:
            stack.pop()
    # Groups left open at the end still weigh their tags (what prompt front ends do).
    for opener, first, syntax in stack:
        if syntax:
            for k in range(first, len(tags)):
                weights[k] *= _GROUP_MULTIPLIER[opener]
    return list(zip(tags, weights))


def _add(tags: list[str], weights: list[float], parts: list[str]) -> None:
    """Finish the tag read so far (if any) with weight 1; the enclosing groups scale it later."""
    tag = "_".join("".join(parts).lower().split())
    parts.clear()
    if tag:
        tags.append(tag)
        weights.append(1.0)


def _dedupe(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Keep the first occurrence of each tag, with the largest weight any occurrence had."""
    best: dict[str, float] = {}
    for tag, weight in pairs:
        if tag not in best or weight > best[tag]:
            best[tag] = weight
    return list(best.items())
