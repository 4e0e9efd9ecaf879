"""Neck, torso, body-type cues and the outfits."""

from __future__ import annotations

import math

from .geometry import Layout
from .palette import GOLD, OUTFIT_RGB, RGB, WHITE, Point
from .pen import Pen, line_colour, shade, tint
from .spec import CharacterSpec, Variation


def draw_neck(pen: Pen, g: Layout) -> None:
    pen.rect(g.cx - g.neck, g.cy + g.ry * 0.5, g.cx + g.neck, g.y_sh + 6, fill=g.skin, outline=g.skin_line,
             width=g.lw)
    pen.chord(g.cx, g.cy + g.ry * 0.92, g.neck + 1, 9, 0, 180, fill=shade(g.skin, 0.85))  # shadow under the chin


def _torso(g: Layout, body: str) -> list[Point]:
    drop = 9 if body == "athletic" else 16
    half = [(g.neck + 3, g.y_sh - 5), (g.sw * 0.7, g.y_sh + 1), (g.sw * 0.97, g.y_sh + drop * 0.6),
            (g.sw, g.y_sh + drop + 6), (g.sw + 2, 264)]
    right = [(g.cx + x, y) for x, y in half]
    left = [(g.cx - x, y) for x, y in reversed(half)]
    return left + right


def _arm_lines(g: Layout, body: str) -> list[list[Point]]:
    """Where the arms meet the torso; the waist and hips they draw show the body type."""
    mid, bottom = {"petite": (0.72, 0.74), "average": (0.74, 0.78), "athletic": (0.6, 0.58),
                   "curvy": (0.56, 0.8), "plump": (0.92, 0.9)}[body]
    lines = []
    for s in (-1, 1):
        lines.append([(g.cx + s * g.sw * 0.8, g.y_sh + 32), (g.cx + s * g.sw * mid, g.y_sh + 62),
                      (g.cx + s * g.sw * bottom, 264)])
    return lines


def draw_body(pen: Pen, spec: CharacterSpec, v: Variation, g: Layout) -> None:
    palette = OUTFIT_RGB[spec.clothing]
    main = palette[int(v.outfit_pick * len(palette))]
    torso = _torso(g, spec.body_type)
    skin_shows = spec.clothing == "swimsuit"
    fill = g.skin if skin_shows else (248, 248, 250) if spec.clothing == "school_uniform" else main
    line = g.skin_line if skin_shows else line_colour(fill)
    pen.polygon(torso, fill=fill, outline=line, width=g.lw)
    _OUTFITS[spec.clothing](pen, g, v, main, spec)
    for pts in _arm_lines(g, spec.body_type):
        pen.line(pts, fill=line, width=g.lw)
    _body_cues(pen, spec, g, line, skin_shows)


def _body_cues(pen: Pen, spec: CharacterSpec, g: Layout, line: RGB, skin_shows: bool) -> None:
    cx, top = g.cx, g.y_sh
    if spec.body_type == "curvy":
        for s in (-1, 1):
            pen.arc(cx + s * 14, top + 34, 15, 13, 20, 160, fill=line, width=g.lw)
    elif spec.body_type == "athletic":
        for s in (-1, 1):
            pen.arc(cx + s * g.sw * 0.82, top + 24, 12, 16, 180 if s < 0 else 270, 270 if s < 0 else 360,
                    fill=line, width=g.lw)  # deltoids
            pen.arc(cx + s * 13, top + 30, 14, 8, 20, 160, fill=line, width=g.lw)  # chest
        if skin_shows:
            for row in range(3):
                for s in (-1, 1):
                    pen.arc(cx + s * 6, top + 50 + row * 11, 5, 4, 0, 180, fill=line, width=g.lw * 0.8)
    elif spec.body_type == "plump":
        pen.arc(cx, top + 96, 34, 22, 200, 340, fill=line, width=g.lw)  # belly
        pen.arc(g.cx, g.cy + g.ry * 0.96, 11, 5, 20, 160, fill=g.skin_line, width=g.lw * 0.8)  # double chin
    if skin_shows:
        pen.arc(cx, top + 74, 2.5, 3.5, 0, 360, fill=g.skin_line, width=g.lw * 0.8)  # navel


def _school_uniform(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    collar = [(cx - g.neck - 3, top - 6), (cx - g.sw * 0.78, top + 4), (cx - g.sw * 0.58, top + 34), (cx, top + 52),
              (cx + g.sw * 0.58, top + 34), (cx + g.sw * 0.78, top + 4), (cx + g.neck + 3, top - 6), (cx, top + 30)]
    pen.polygon(collar, fill=main, outline=line_colour(main), width=g.lw)
    pen.line([(cx - g.sw * 0.7, top + 6), (cx - g.sw * 0.52, top + 31), (cx, top + 46), (cx + g.sw * 0.52, top + 31),
              (cx + g.sw * 0.7, top + 6)], fill=WHITE, width=2)  # the collar stripe
    red = (214, 40, 56)
    pen.polygon([(cx - 11, top + 40), (cx + 11, top + 40), (cx, top + 52)], fill=red, outline=shade(red, 0.6),
                width=g.lw)  # the neckerchief
    pen.polygon([(cx - 3, top + 50), (cx - 12, top + 76), (cx - 3, top + 74)], fill=red)
    pen.polygon([(cx + 3, top + 50), (cx + 12, top + 76), (cx + 3, top + 74)], fill=red)


def _dress(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    for s in (-1, 1):  # puffed sleeves
        pen.ellipse(cx + s * g.sw * 0.86, top + 16, 15, 14, fill=tint(main, 0.15), outline=line_colour(main),
                    width=g.lw)
    pen.chord(cx, top - 4, 22, 20, 0, 180, fill=g.skin)  # scoop neckline
    for i in range(9):  # frills along it
        a = math.radians(10 + i * 20)
        pen.ellipse(cx + 23 * math.cos(a), top - 4 + 21 * math.sin(a), 3.5, 3.5, fill=WHITE, outline=(200, 200, 210),
                    width=0.6)
    pen.ellipse(cx, top + 24, 6, 4, fill=v.accent, outline=line_colour(v.accent), width=0.8)  # a bow at the chest
    pen.polygon([(cx - 5, top + 24), (cx - 16, top + 17), (cx - 16, top + 31)], fill=v.accent)
    pen.polygon([(cx + 5, top + 24), (cx + 16, top + 17), (cx + 16, top + 31)], fill=v.accent)


def _casual(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    pen.arc(cx, top - 2, g.neck + 13, 14, 0, 180, fill=shade(main, 0.8), width=9)  # hood around the neck
    for s in (-1, 1):  # drawstrings
        pen.line([(cx + s * 6, top + 8), (cx + s * 7, top + 38)], fill=WHITE, width=2)
        pen.ellipse(cx + s * 7, top + 40, 2, 3, fill=WHITE)
    pen.rect(cx - 28, top + 64, cx + 28, top + 100, outline=line_colour(main), width=g.lw, radius=8)  # pocket


def _formal(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    pen.polygon([(cx - g.neck - 4, top - 6), (cx + g.neck + 4, top - 6), (cx, top + 60)], fill=WHITE,
                outline=(170, 170, 180), width=g.lw * 0.7)  # shirt
    tie = v.accent if v.accent not in ((250, 250, 250), (30, 30, 36)) else (170, 30, 50)
    pen.polygon([(cx - 4, top - 2), (cx + 4, top - 2), (cx + 6, top + 40), (cx, top + 50), (cx - 6, top + 40)],
                fill=tie, outline=line_colour(tie), width=g.lw * 0.7)
    for s in (-1, 1):  # lapels
        pen.polygon([(cx + s * (g.neck + 4), top - 6), (cx + s * (g.neck + 14), top + 10), (cx + s * 4, top + 62),
                     (cx + s * 2, top + 60)], fill=shade(main, 0.75), outline=line_colour(main), width=g.lw * 0.7)
    pen.ellipse(cx, top + 72, 2.6, 2.6, fill=(200, 200, 210))


def _traditional(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    flower = tint(main, 0.45)
    for fx, fy in ((-0.6, 30), (0.5, 22), (0.75, 52), (-0.45, 70), (0.2, 84)):  # a simple print
        pen.ellipse(cx + fx * g.sw, top + fy, 5, 5, fill=flower)
    pen.line([(cx + g.neck + 2, top - 6), (cx - 4, top + 36)], fill=WHITE, width=7)  # collars, left over right
    pen.line([(cx - g.neck - 2, top - 6), (cx + 12, top + 48)], fill=WHITE, width=7)
    pen.line([(cx - g.neck - 2, top - 6), (cx + 12, top + 48)], fill=shade(main, 0.6), width=1.2)
    obi = v.accent if v.accent != main else GOLD
    pen.rect(cx - g.sw - 4, top + 58, cx + g.sw + 4, top + 82, fill=obi, outline=line_colour(obi), width=g.lw)
    pen.line([(cx - g.sw - 4, top + 70), (cx + g.sw + 4, top + 70)], fill=shade(obi, 0.6), width=2)


def _swimsuit(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    line = line_colour(main)
    if spec.gender == "male":  # trunks: the waistband shows at the bottom
        pen.rect(cx - g.sw * 0.8, top + 78, cx + g.sw * 0.8, 264, fill=main, outline=line, width=g.lw)
        pen.line([(cx - 3, top + 80), (cx - 5, top + 92)], fill=WHITE, width=1.5)
        pen.line([(cx + 3, top + 80), (cx + 5, top + 92)], fill=WHITE, width=1.5)
        return
    for s in (-1, 1):
        pen.line([(cx + s * (g.neck + 1), top - 4), (cx + s * 14, top + 26)], fill=main, width=2.2)  # straps
        pen.polygon([(cx + s * 3, top + 26), (cx + s * 26, top + 30), (cx + s * 15, top + 48), (cx + s * 2, top + 46)],
                    fill=main, outline=line, width=g.lw)
    pen.line([(cx - 2, top + 40), (cx + 2, top + 40)], fill=main, width=3)


def _maid(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh  # black dress, white apron and collar
    pen.polygon(_torso(g, spec.body_type), fill=(34, 34, 44))
    pen.rect(cx - 22, top + 24, cx + 22, 264, fill=WHITE, outline=(170, 170, 180), width=g.lw)
    for i in range(6):
        pen.ellipse(cx - 19 + i * 7.6, top + 24, 4, 3, fill=WHITE, outline=(170, 170, 180), width=0.6)
    for s in (-1, 1):
        pen.polygon([(cx + s * 2, top - 4), (cx + s * (g.neck + 12), top - 2), (cx + s * 10, top + 12)],
                    fill=WHITE, outline=(170, 170, 180), width=g.lw * 0.7)


def _military(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    for s in (-1, 1):  # epaulettes and two rows of buttons
        pen.rect(cx + s * g.sw * 0.55 - 11, top + 2, cx + s * g.sw * 0.55 + 11, top + 9, fill=GOLD,
                 outline=shade(GOLD, 0.6), width=0.8)
        for row in range(4):
            pen.ellipse(cx + s * 12, top + 22 + row * 16, 3, 3, fill=GOLD, outline=shade(GOLD, 0.6), width=0.6)
    pen.rect(cx - g.neck - 4, top - 8, cx + g.neck + 4, top + 2, fill=shade(main, 0.7))  # stand collar
    pen.line([(cx, top + 2), (cx, 264)], fill=line_colour(main), width=g.lw)


def _armor(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    line = line_colour(main)
    pen.line([(cx, top + 4), (cx, 264)], fill=tint(main, 0.5), width=3)  # the ridge of the breastplate
    for y in (top + 56, top + 76):
        pen.arc(cx, y - 30, g.sw * 0.8, 30, 30, 150, fill=line, width=g.lw)  # plate segments
    pen.rect(cx - g.neck - 5, top - 9, cx + g.neck + 5, top + 3, fill=shade(main, 0.85), outline=line, width=g.lw)
    for s in (-1, 1):  # pauldrons with gold trim and rivets
        px = cx + s * g.sw * 0.86
        pen.chord(px, top + 14, 22, 18, 180, 360, fill=tint(main, 0.2))
        pen.arc(px, top + 14, 22, 18, 180, 360, fill=GOLD, width=2.5)
        pen.line([(px - 22, top + 14), (px + 22, top + 14)], fill=GOLD, width=2.5)
        for k in (-1, 0, 1):
            pen.ellipse(px + k * 10, top + 8 - (0 if k else 5), 1.8, 1.8, fill=shade(main, 0.5))


def _sleepwear(pen: Pen, g: Layout, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    dot = tint(main, 0.65)
    for row in range(5):  # polka dots, kept inside the torso
        y = top + 16 + row * 18
        for col in range(-3, 4):
            x = cx + col * 16 + (8 if row % 2 else 0)
            if abs(x - cx) < g.sw * 0.8 - 6:
                pen.ellipse(x, y, 3.5, 3.5, fill=dot)
    for s in (-1, 1):  # rounded pyjama collar
        pen.polygon([(cx + s * 1, top - 2), (cx + s * (g.neck + 13), top - 4), (cx + s * (g.neck + 10), top + 16),
                     (cx + s * 3, top + 14)], fill=tint(main, 0.4), outline=line_colour(main), width=g.lw * 0.8)
    pen.line([(cx, top + 14), (cx, 264)], fill=line_colour(main), width=g.lw * 0.8)
    for row in range(4):
        pen.ellipse(cx + 5, top + 26 + row * 18, 2.5, 2.5, fill=WHITE, outline=line_colour(main), width=0.6)


_OUTFITS = {"school_uniform": _school_uniform, "dress": _dress, "casual": _casual, "formal": _formal,
            "japanese_traditional": _traditional, "swimsuit": _swimsuit, "maid": _maid,
            "military_uniform": _military, "armor": _armor,
            "sleepwear": _sleepwear}


