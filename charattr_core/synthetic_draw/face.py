"""Face: ears, skin, eyes, brows, age lines and the mouth (expression)."""

from __future__ import annotations

import math

from .geometry import Layout
from .palette import EYE_RGB, HAIR_RGB, INK, RGB, WHITE
from .pen import Pen, shade
from .spec import CharacterSpec


def draw_face(pen: Pen, spec: CharacterSpec, g: Layout) -> None:
    cx, cy = g.cx, g.cy
    for s in (-1, 1):  # ears
        pen.ellipse(cx + s * g.rx * 0.97, cy + g.ry * 0.2, 6, 10, fill=g.skin, outline=g.skin_line, width=g.lw)
    taper = {"male": 0.2, "ambiguous": 0.3, "female": 0.4}[spec.gender]
    if spec.body_type == "plump":
        taper -= 0.12
    outline = []
    for i in range(64):
        a = 2 * math.pi * i / 64
        x, y = math.cos(a), math.sin(a)
        if y > 0:  # taper the lower half towards the chin
            x *= 1 - taper * y ** 1.6
        outline.append((cx + g.rx * x, cy + g.ry * y))
    pen.polygon(outline, fill=g.skin, outline=g.skin_line, width=g.lw)
    for s, colour in ((-1, spec.eye_color[0]), (1, spec.eye_color[-1])):
        _eye(pen, spec, g, cx + s * g.eye_gap, s, EYE_RGB[colour])
    pen.line([(cx + 1, cy + g.ry * 0.38), (cx - 1, cy + g.ry * 0.43)], fill=g.skin_line, width=g.lw * 0.9)  # nose
    _age_lines(pen, spec, g)
    _mouth(pen, spec, g)
    if spec.expression == "embarrassed":
        for s in (-1, 1):
            pen.ellipse(cx + s * g.eye_gap * 1.15, g.eye_y + g.eye_ry + 7, 10, 4.5, fill=(244, 150, 160))
            for k in (-4, 0, 4):
                pen.line([(cx + s * g.eye_gap * 1.15 + k + 1.5, g.eye_y + g.eye_ry + 4),
                          (cx + s * g.eye_gap * 1.15 + k - 1.5, g.eye_y + g.eye_ry + 10)], fill=(222, 96, 112), width=1)
    if spec.expression == "sad":  # a tear
        x, y = cx - g.eye_gap + 3, g.eye_y + g.eye_ry + 4
        pen.polygon([(x, y - 4), (x + 3.5, y + 4), (x - 3.5, y + 4)], fill=(150, 200, 250))
        pen.ellipse(x, y + 5, 3.6, 3.6, fill=(150, 200, 250))


def _eye(pen: Pen, spec: CharacterSpec, g: Layout, x: float, s: int, iris: RGB) -> None:
    """One eye; `s` is -1 for the left eye, 1 for the right (its outer corner is on side `s`)."""
    expr = spec.expression
    rx, ry, y = g.eye_rx, g.eye_ry, g.eye_y
    if expr == "surprised":
        ry *= 1.12
    pen.ellipse(x, y, rx, ry, fill=WHITE)
    small = expr == "surprised"
    irx, iry, iy = rx * (0.56 if small else 0.8), ry * (0.6 if small else 0.84), y + ry * 0.1
    pen.ellipse(x, iy, irx, iry, fill=iris, outline=shade(iris, 0.55), width=g.lw * 0.6)
    pen.chord(x, iy, irx, iry, 200, 340, fill=shade(iris, 0.75))
    if iris != EYE_RGB["white"]:  # white eyes are drawn blank, as Danbooru's white_eyes are
        pen.ellipse(x, iy + 1, irx * 0.42, iry * 0.46, fill=shade(iris, 0.3))
    pen.ellipse(x - irx * 0.35, iy - iry * 0.4, irx * 0.3, iry * 0.24, fill=WHITE)
    if expr == "happy":  # lower lid pushed up by the smile
        pen.chord(x, y + ry * 1.45, rx * 1.3, ry * 0.75, 180, 360, fill=g.skin)
        pen.arc(x, y + ry * 1.45, rx * 1.3, ry * 0.75, 215, 325, fill=INK, width=g.lw * 0.8)
    elif expr == "smug":  # half-closed
        pen.rect(x - rx - 1, y - ry - 2, x + rx + 1, y - ry * 0.3, fill=g.skin)
        pen.line([(x - rx - 1, y - ry * 0.3), (x + rx + 1, y - ry * 0.3)], fill=INK, width=g.lw * 1.6)
    elif expr == "angry":  # lids slanting down towards the nose
        inner, outer = x - s * (rx + 1), x + s * (rx + 1)
        pen.polygon([(inner, y - ry - 2), (outer, y - ry - 2), (inner, y - ry * 0.15)], fill=g.skin)
        pen.line([(inner, y - ry * 0.15), (outer, y - ry * 0.9)], fill=INK, width=g.lw * 1.6)
    if expr not in ("smug", "angry"):
        pen.arc(x, y, rx + 0.5, ry + 0.5, 195, 345, fill=INK, width=g.lw * 1.7)  # upper lash line
    if spec.gender == "female":  # lashes at the outer corner
        ox, oy = x + s * rx * 0.95, y - ry * 0.45
        pen.polygon([(ox - s * 3, oy - 2), (ox + s * 6, oy - 7), (ox + s * 2, oy + 2)], fill=INK)
    pen.arc(x, y + 1, rx * 0.8, ry * 0.95, 60, 120, fill=shade(g.skin, 0.7), width=g.lw * 0.6)  # lower lid


def draw_brows(pen: Pen, spec: CharacterSpec, g: Layout) -> None:
    """Eyebrows, drawn over the bangs as anime does; their angle carries the expression."""
    lift = {"happy": (-2, -2), "neutral": (0, 0), "sad": (-6, 2), "angry": (6, -3), "surprised": (-7, -7),
            "embarrassed": (-4, 1), "smug": (0, 0)}[spec.expression]
    width = {"male": 2.8, "ambiguous": 1.6, "female": 1.3}[spec.gender] * g.lw
    colour = shade(HAIR_RGB[spec.hair_color[0]], 0.6) if spec.hair_color else g.skin_line
    by = g.eye_y - g.eye_ry - 6
    for s in (-1, 1):
        x = g.cx + s * g.eye_gap
        inner_dy, outer_dy = lift
        if spec.expression == "smug" and s == 1:
            inner_dy = outer_dy = -5  # one brow raised
        inner, outer = (x - s * g.eye_rx * 0.8, by + inner_dy), (x + s * g.eye_rx * 1.05, by + outer_dy + 1)
        mid = ((inner[0] + outer[0]) / 2, (inner[1] + outer[1]) / 2 - 2)
        pen.line([inner, mid, outer], fill=colour, width=width)


def _age_lines(pen: Pen, spec: CharacterSpec, g: Layout) -> None:
    line = shade(g.skin, 0.72)
    if spec.age in ("middle_aged", "elderly"):
        for s in (-1, 1):  # smile lines beside the nose, bags under the eyes
            pen.arc(g.cx + s * 10, g.cy + g.ry * 0.5, 6, 10, 90 - s * 60, 90 + s * 10 if s > 0 else 170,
                    fill=line, width=g.lw * 0.7)
            pen.arc(g.cx + s * g.eye_gap, g.eye_y + g.eye_ry + 2, g.eye_rx * 0.8, 3, 20, 160, fill=line,
                    width=g.lw * 0.6)
    if spec.age == "elderly":
        for s in (-1, 1):  # crow's feet
            ox = g.cx + s * (g.eye_gap + g.eye_rx + 3)
            for dy in (-3, 1, 5):
                pen.line([(ox, g.eye_y + dy * 0.5), (ox + s * 5, g.eye_y + dy)], fill=line, width=g.lw * 0.6)
        for k in range(2):  # cheek folds
            y = g.cy + g.ry * (0.5 + 0.1 * k)
            pen.line([(g.cx - g.rx * 0.55, y), (g.cx - g.rx * 0.45, y + g.ry * 0.1)], fill=line, width=g.lw * 0.6)
    if spec.gender == "female" and spec.age in ("adult", "middle_aged", "elderly", "young_adult"):
        pen.arc(g.cx, g.mouth_y + 3, 4, 2, 20, 160, fill=(214, 110, 120), width=g.lw * 0.8)  # lip tint


def _mouth(pen: Pen, spec: CharacterSpec, g: Layout) -> None:
    x, y, lw = g.cx, g.mouth_y, g.lw
    expr = spec.expression
    inside = (150, 40, 52)
    if expr == "happy":
        pen.chord(x, y - 3, 8, 8, 0, 180, fill=inside)
        pen.chord(x, y + 3, 4.5, 2.5, 180, 360, fill=(240, 130, 140))  # tongue
        pen.line([(x - 8, y - 3), (x + 8, y - 3)], fill=INK, width=lw * 0.8)
    elif expr == "neutral":
        pen.line([(x - 5, y), (x + 5, y)], fill=INK, width=lw)
    elif expr == "sad":
        pen.arc(x, y + 5, 7, 5, 205, 335, fill=INK, width=lw)
    elif expr == "angry":  # clenched teeth
        pen.rect(x - 8, y - 3, x + 8, y + 4, fill=WHITE, outline=INK, width=lw * 0.9, radius=1.5)
        pen.line([(x - 8, y + 0.5), (x + 8, y + 0.5)], fill=(150, 150, 160), width=0.8)
    elif expr == "surprised":
        pen.ellipse(x, y + 1, 4, 5.5, fill=inside, outline=INK, width=lw * 0.7)
    elif expr == "embarrassed":  # a wobbly line
        pen.line([(x - 7, y), (x - 3.5, y - 2), (x, y), (x + 3.5, y - 2), (x + 7, y)], fill=INK, width=lw * 0.9)
    elif expr == "smug":  # lopsided smirk
        pen.line([(x - 6, y + 1), (x + 1, y + 1.5), (x + 7, y - 3)], fill=INK, width=lw)


