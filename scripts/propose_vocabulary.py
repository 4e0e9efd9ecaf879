"""Propose vocabulary entries from Danbooru's tag groups and tag list, for a person to review.

    python scripts/propose_vocabulary.py [--data ../shared/data] [--min-posts 2000] [--vocabulary FILE]

Reads `vocab/danbooru_tag_groups.json` (Danbooru's wiki tag-group hierarchy: hair colour, hair
styles, length, skin colour, ...) and `vocab/danbooru_tags.csv` (every tag with its post count and
aliases). Prints, per attribute, the candidate tags with their post counts and aliases, marked
`in` when the vocabulary already reads them (as a tag, alias or weak tag of some value) and `NEW`
otherwise. Attire, headwear and eyewear have no tag group in that file, so their candidates come
from the tag list by name (`*_uniform`, `*_hat`, `*_eyewear`, ...).

Nothing is written: `charattr_core/attributes.toml` is edited by hand and is what runs. A tag
left out on purpose (a fringe is not a hair style) stays `NEW` here; the TOML says why.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from charattr_core.schema import load_vocabulary, normalize_tag

ROOT = Path(__file__).resolve().parents[1]

# attribute -> tag-group path prefixes (lower case, as in the file's normalized_data) it draws from
GROUP_SOURCES: dict[str, tuple[str, ...]] = {
    "hair_color": ("tag group:hair > tag group:hair color > specific colors",),
    "hair_length": ("tag group:hair > tag group:hair styles > length and volume",),
    "hair_style": ("tag group:hair > tag group:hair styles > hairstyles > tied hair",
                   "tag group:hair > tag group:hair styles > hairstyles > hair texture",
                   "tag group:hair > tag group:hair styles > hairstyles > tall hair",
                   "tag group:hair > tag group:hair styles > hairstyles > short hair",
                   "tag group:hair > tag group:hair styles > hairstyles > very short hair",
                   "tag group:hair > tag group:hair styles > hairstyles > medium hair",
                   "tag group:hair > tag group:hair styles > hairstyles > long hair"),
    "skin_tone": ("tag group:skin color",),
    "accessories": ("tag group:hair > objects > accessories for the hair",),
}
# attribute -> name patterns over the tag list (no tag group covers attire in the file)
NAME_SOURCES: dict[str, tuple[str, ...]] = {
    "clothing": (r".*_uniform", r".*_dress", r".*swimsuit", r".*_clothes", r".*armor", r"(kimono|yukata|hakama|"
                 r"hanfu|tangzhuang|maid|miko|nurse|suit|bodysuit|pajamas|nightgown|sportswear|gym_uniform)"),
    "accessories": (r".*_hat", r".*_cap", r".*_eyewear", r"(glasses|sunglasses|goggles|helmet|crown|tiara|"
                    r"necktie|bowtie|earrings|necklace|choker|headphones|scarf|gloves|mask|eyepatch)"),
}


@dataclass(frozen=True)
class TagInfo:
    posts: int
    aliases: tuple[str, ...]


def read_tags(path: Path) -> dict[str, TagInfo]:
    out = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 3 and row[1] == "0":  # general tags only
                aliases = tuple(a for a in (row[3].split(",") if len(row) > 3 else ()) if a and not a.startswith("/"))
                out[row[0]] = TagInfo(int(row[2] or 0), aliases)
    return out


def group_tags(path: Path) -> dict[str, list[str]]:
    """attribute -> the tags under its tag-group paths (leaves and named inner nodes)."""
    items = json.loads(path.read_text(encoding="utf-8"))["normalized_data"]["items"]
    out: dict[str, list[str]] = {}
    for name, item in items.items():
        trail = " > ".join(item["path"][3:])
        if name.startswith("tag group") or item["classification"] == "tag_group_only":
            continue
        for key, prefixes in GROUP_SOURCES.items():
            if any(trail.startswith(p) and trail != p for p in prefixes):
                out.setdefault(key, []).append(normalize_tag(name))
    return out


def name_tags(tags: dict[str, TagInfo], min_posts: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, patterns in NAME_SOURCES.items():
        pattern = re.compile("|".join(f"(?:{p})" for p in patterns))
        out[key] = [t for t, info in tags.items() if info.posts >= min_posts and pattern.fullmatch(t)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--min-posts", type=int, default=2000, help="leave out rarer tags")
    ap.add_argument("--vocabulary", type=Path, default=None, help="the vocabulary to compare with (default: bundled)")
    args = ap.parse_args(argv)
    groups_path, tags_path = args.data / "vocab" / "danbooru_tag_groups.json", args.data / "vocab" / "danbooru_tags.csv"
    if not groups_path.is_file() or not tags_path.is_file():
        print(f"Need {groups_path} and {tags_path}; pass --data.", file=sys.stderr)
        return 2
    vocabulary = load_vocabulary(args.vocabulary)
    read_as = {tag: sorted({f"{h.attribute}.{h.value}" for h in hits}) for tag, hits in vocabulary.tag_index.items()}
    tags = read_tags(tags_path)
    candidates: dict[str, list[str]] = {}
    for source in (group_tags(groups_path), name_tags(tags, args.min_posts)):
        for key, found in source.items():
            candidates.setdefault(key, []).extend(t for t in found if t not in candidates.get(key, []))
    for key in vocabulary.keys:
        found = sorted(candidates.get(key, []), key=lambda t: -tags.get(t, TagInfo(0, ())).posts)
        if not found:
            continue
        print(f"\n[{key}]  {len(found)} candidates")
        for tag in found:
            info = tags.get(tag, TagInfo(0, ()))
            if info.posts < args.min_posts and tag not in read_as:
                continue
            mark = "in " + ",".join(read_as[tag]) if tag in read_as else "NEW"
            aliases = f"  aliases: {', '.join(info.aliases[:6])}" if info.aliases else ""
            print(f"  {tag:<32} {info.posts:>9,}  {mark}{aliases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
