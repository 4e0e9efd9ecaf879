"""Where the head, eyes, mouth and shoulders go for a character, and the background."""

from __future__ import annotations

from dataclasses import dataclass

from .palette import COLORED_SKIN_RGB, RGB, SKIN_RGB
from .pen import Pen, shade, tint
from .spec import CharacterSpec, Variation


_EYE_SCALE = {"child": 1.16, "teen": 1.0, "young_adult": 0.94, "adult": 0.88, "middle_aged": 0.85, "elderly": 0.8}
_FACE_LENGTH = {"child": 0.98, "teen": 1.08, "young_adult": 1.12, "adult": 1.15, "middle_aged": 1.16, "elderly": 1.14}
_SHOULDERS = {"petite": 50, "average": 58, "athletic": 70, "curvy": 56, "plump": 66}


@dataclass(frozen=True)
class Layout:
    cx: float
    cy: float
    rx: float
    ry: float
    lw: float
    y_sh: float  # top of the shoulders
    sw: float  # shoulder half-width
    neck: float  # neck half-width
    eye_y: float
    eye_gap: float
    eye_rx: float
    eye_ry: float
    mouth_y: float
    skin: RGB
    skin_line: RGB


def layout(spec: CharacterSpec, v: Variation) -> Layout:
    rx = v.head_rx + (3 if spec.body_type == "plump" else 0) - (2 if spec.age == "child" else 0)
    ry = v.head_rx * _FACE_LENGTH[spec.age]
    cx, cy = 128 + v.dx, 96 + v.dy
    sw = _SHOULDERS[spec.body_type] * (0.82 if spec.age == "child" else 1.0) + (4 if spec.gender == "male" else 0)
    if spec.skin_tone == "colored":
        skin = COLORED_SKIN_RGB[int(v.outfit_pick * 97) % len(COLORED_SKIN_RGB)]
    else:
        skin = SKIN_RGB[spec.skin_tone]
    e = _EYE_SCALE[spec.age]
    return Layout(cx=cx, cy=cy, rx=rx, ry=ry, lw=v.line, y_sh=cy + ry + 18, sw=sw,
                neck=13 if spec.gender == "male" else 10.5, eye_y=cy + ry * 0.16, eye_gap=v.eye_gap,
                eye_rx=9.5 * e, eye_ry=12.0 * e, mouth_y=cy + ry * 0.64, skin=skin, skin_line=shade(skin, 0.62))


# -- background ---------------------------------------------------------------------------------------


def draw_background(pen: Pen, v: Variation) -> None:
    mark = shade(v.background, 0.9) if sum(v.background) > 300 else tint(v.background, 0.15)
    if v.pattern == "dots":
        for row in range(9):
            for col in range(9):
                pen.ellipse(col * 30 + (15 if row % 2 else 0), row * 30, 4, 4, fill=mark)
    elif v.pattern == "stripes":
        for k in range(-8, 9):
            pen.line([(k * 32, 0), (k * 32 + 256, 256)], fill=mark, width=9)
    elif v.pattern == "floor":
        pen.rect(0, 200, 256, 256, fill=mark)


