"""Drawing procedural anime-style characters with PIL.

`render(spec, variation, size)` is a pure function: the attribute values in `CharacterSpec` and the
look that is not an attribute in `Variation` (position jitter, line width, outfit colour,
background, ...) decide every pixel. Tests rely on that: change one attribute, keep the variation,
and only what that attribute draws changes.

Geometry is written for a 256-unit canvas and scaled; the picture is drawn at `SUPERSAMPLE` times
the output size and reduced, which is how PIL gets anti-aliased edges. Every attribute value has a
cue of its own (a colour, a shape, a length, a line), so each value is visibly distinct.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Sequence

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
Point = tuple[float, float]

SUPERSAMPLE = 2
UNITS = 256.0  # the geometry below is written for a 256 x 256 canvas

WHITE: RGB = (255, 255, 255)
INK: RGB = (48, 30, 36)  # eyelashes, brows, mouth
GOLD: RGB = (236, 190, 64)

# Attribute value -> the colour that draws it. Tests read these to check the drawn colours.
HAIR_RGB: dict[str, RGB] = {
    "black": (42, 40, 52), "brown": (122, 78, 44), "blonde": (246, 214, 108), "red": (204, 38, 44),
    "orange": (246, 138, 38), "pink": (248, 146, 190), "purple": (138, 78, 192), "blue": (46, 88, 214),
    "aqua": (56, 206, 200), "green": (56, 168, 78), "grey": (150, 150, 160), "white": (246, 246, 250),
}
EYE_RGB: dict[str, RGB] = {
    "black": (34, 32, 38), "brown": (132, 80, 40), "red": (214, 30, 42), "orange": (242, 128, 30),
    "yellow": (236, 200, 36), "green": (46, 170, 70), "aqua": (46, 200, 200), "blue": (46, 100, 224),
    "purple": (150, 68, 204), "pink": (242, 108, 170), "grey": (140, 140, 152), "white": (238, 238, 244),
}
SKIN_RGB: dict[str, RGB] = {
    "pale": (255, 240, 234), "fair": (250, 218, 192), "tan": (214, 158, 108), "dark": (128, 84, 56),
}
COLORED_SKIN_RGB: tuple[RGB, ...] = ((122, 168, 232), (124, 198, 132), (172, 172, 186), (188, 124, 204))
OUTFIT_RGB: dict[str, tuple[RGB, ...]] = {  # main colour of each outfit; the variation picks one
    "school_uniform": ((34, 46, 98), (30, 70, 52), (40, 36, 42), (110, 34, 48)),  # the sailor collar
    "dress": ((220, 60, 92), (88, 120, 222), (246, 246, 250), (36, 34, 44), (240, 168, 200), (118, 200, 160)),
    "casual": ((122, 130, 142), (230, 118, 58), (70, 140, 92), (90, 100, 172), (238, 228, 198)),
    "formal": ((36, 36, 46), (38, 50, 84), (72, 72, 78)),
    "traditional": ((202, 42, 62), (60, 80, 172), (240, 168, 190), (58, 140, 112)),
    "swimsuit": ((40, 110, 222), (232, 48, 92), (250, 250, 252), (32, 32, 42), (250, 198, 48)),
    "uniform": ((34, 34, 44), (84, 96, 58), (36, 48, 88)),
    "armor": ((176, 182, 194), (150, 156, 168)),
    "sleepwear": ((198, 218, 250), (250, 208, 224), (218, 248, 208)),
}
ACCENT_RGB: tuple[RGB, ...] = ((214, 40, 56), (40, 90, 200), (240, 200, 60), (250, 250, 250), (30, 30, 36),
                               (236, 110, 170))
BACKGROUND_RGB: tuple[RGB, ...] = ((236, 242, 250), (250, 236, 226), (226, 244, 232), (244, 232, 248),
                                   (252, 248, 220), (210, 222, 240), (230, 230, 230), (64, 70, 96),
                                   (250, 214, 214), (200, 232, 236))

HAIR_SHAPES = ("ponytail", "side_ponytail", "twintails", "braid", "bun", "drills", "bob_cut")
HAIR_TEXTURES = ("straight", "wavy", "curly", "spiky", "messy")
HAIR_LENGTHS = ("bald", "very_short", "short", "medium", "long", "very_long")
HAT_KINDS = ("beret", "witch_hat", "baseball_cap", "sun_hat")

# attribute -> the values this module can draw. Other values of a vocabulary are never sampled.
DRAWABLE: dict[str, tuple[str, ...]] = {
    "age": ("child", "teen", "young_adult", "adult", "middle_aged", "elderly"),
    "gender": ("female", "male", "ambiguous"),
    "skin_tone": (*SKIN_RGB, "colored"),
    "hair_color": tuple(HAIR_RGB),
    "hair_length": HAIR_LENGTHS,
    "hair_style": HAIR_SHAPES + HAIR_TEXTURES,
    "eye_color": tuple(EYE_RGB),
    "body_type": ("petite", "average", "athletic", "curvy", "plump"),
    "clothing": tuple(OUTFIT_RGB),
    "expression": ("happy", "neutral", "sad", "angry", "surprised", "embarrassed", "smug"),
    "accessories": ("glasses", "hat", "hair_ribbon", "hair_ornament", "hairband", "earrings", "necklace",
                    "choker", "headphones", "mask", "scarf"),
}
# Cues per attribute, for the dataset description (which attributes a picture can show, and how).
CUES: dict[str, str] = {
    "age": "proportions: eye size, face length, body size; wrinkles from middle age on",
    "gender": "eyelashes and lip tint (female), thick brows and a wide jaw (male), neither (ambiguous)",
    "skin_tone": "skin colour",
    "hair_color": "hair colour; a second colour on the lower half and one bang streak",
    "hair_length": "how far the hair, tails or braids reach (bald: no hair)",
    "hair_style": "tails, braids, buns, drills, bob cut; wavy/curly/spiky/messy outlines",
    "eye_color": "iris colour; heterochromia draws the eyes in two colours",
    "body_type": "shoulder and waist width, chest, muscle and belly lines",
    "clothing": "outfit shape and colour on the upper body",
    "expression": "mouth, brows, lids, tears, blush",
    "accessories": "drawn items; a mask hides the mouth",
}


@dataclass(frozen=True)
class CharacterSpec:
    """The attribute values one picture shows (field names are the vocabulary's attribute keys).

    Multi-valued attributes are tuples: `hair_color` (empty when bald; a second colour draws the
    lower half and a streak), `eye_color` (left eye, right eye when heterochromatic),
    `hair_style` (at most one shape of `HAIR_SHAPES` plus a texture of `HAIR_TEXTURES`; a shape
    alone means straight hair), `accessories`.
    """

    age: str
    gender: str
    skin_tone: str
    hair_color: tuple[str, ...]
    hair_length: str
    hair_style: tuple[str, ...]
    eye_color: tuple[str, ...]
    body_type: str
    clothing: str
    expression: str
    accessories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            for v in value if isinstance(value, tuple) else (value,):
                if v not in DRAWABLE[f.name]:
                    raise ValueError(f"cannot draw {f.name}={v!r}; drawable values: {', '.join(DRAWABLE[f.name])}")
        if not 1 <= len(self.eye_color) <= 2:
            raise ValueError("eye_color needs one colour, or two for heterochromia")
        if (self.hair_length == "bald") != (not self.hair_color):
            raise ValueError("hair_color must be empty exactly when hair_length is 'bald'")
        if len([s for s in self.hair_style if s in HAIR_SHAPES]) > 1:
            raise ValueError("hair_style holds at most one of " + ", ".join(HAIR_SHAPES))

    def values(self) -> dict[str, list[str]]:
        """attribute -> drawn values, the ground truth of the picture."""
        out: dict[str, list[str]] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(dict.fromkeys(value)) if isinstance(value, tuple) else [value]
        if self.hair_length == "bald":  # a bald head has no hair colour or style to be right about
            del out["hair_color"], out["hair_style"]
        return out

    @property
    def hair_shape(self) -> str | None:
        return next((s for s in self.hair_style if s in HAIR_SHAPES), None)

    @property
    def hair_texture(self) -> str:
        return next((s for s in self.hair_style if s in HAIR_TEXTURES), "straight")


@dataclass(frozen=True)
class Variation:
    """What varies between pictures beside the attributes; picks in [0, 1) index palettes."""

    dx: float  # head position jitter
    dy: float
    head_rx: float
    line: float  # outline width
    eye_gap: float  # half the distance between the eyes
    tilt: float  # degrees the finished picture is rotated
    background: RGB
    pattern: str  # plain, dots, stripes, floor
    outfit_pick: float
    accent: RGB  # ties, obi, ribbons, hat bands
    item: RGB  # hats, headphones, hairbands, scarves
    hat_kind: str
    style_pick: float  # sub-styles: maid or military, bikini colouring, double bun, twin braids
    side: int  # -1 or 1: where one-sided things go (side ponytail, braid, ribbon)
    detail_seed: int  # messy strands


def sample_variation(rng: random.Random) -> Variation:
    """Draw a variation; uses `rng` a fixed number of times whatever the character is."""
    return Variation(
        dx=rng.uniform(-7, 7), dy=rng.uniform(-5, 6), head_rx=rng.uniform(44, 50), line=rng.uniform(1.5, 2.5),
        eye_gap=rng.uniform(17.5, 21.5), tilt=rng.uniform(-4, 4) if rng.random() < 0.6 else 0.0,
        background=_jitter(rng.choice(BACKGROUND_RGB), rng, 10),
        pattern=rng.choice(("plain", "plain", "dots", "stripes", "floor")),
        outfit_pick=rng.random(), accent=rng.choice(ACCENT_RGB), item=_jitter(rng.choice(ACCENT_RGB[:5]), rng, 14),
        hat_kind=rng.choice(HAT_KINDS), style_pick=rng.random(), side=rng.choice((-1, 1)),
        detail_seed=rng.randrange(1 << 30),
    )


def render(spec: CharacterSpec, variation: Variation, size: int = 256) -> Image.Image:
    """The picture of `spec` with `variation`, `size` x `size` RGB."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), variation.background)
    pen = _Pen(ImageDraw.Draw(image), big / UNITS)
    g = _geometry(spec, variation)
    _background(pen, variation)
    hair = _Hair(pen, spec, variation, g)
    hair.back()
    _neck(pen, g)
    _body(pen, spec, variation, g)
    _neck_accessories(pen, spec, variation, g)
    hair.tails()
    _face(pen, spec, g)
    hair.front()
    _brows(pen, spec, g)
    _head_accessories(pen, spec, variation, g, hair)
    if variation.tilt:
        # Nearest is enough here: the reduction below anti-aliases (and bicubic costs 20x more).
        image = image.rotate(variation.tilt, resample=Image.Resampling.NEAREST, fillcolor=variation.background)
    return image.reduce(SUPERSAMPLE)


# -- helpers ----------------------------------------------------------------------------------------


def _jitter(c: RGB, rng: random.Random, amount: int) -> RGB:
    return tuple(min(255, max(0, v + rng.randint(-amount, amount))) for v in c)  # type: ignore[return-value]


def shade(c: RGB, f: float) -> RGB:
    """`c` darkened (f < 1) towards black."""
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def tint(c: RGB, f: float) -> RGB:
    """`c` lightened towards white by fraction f."""
    return tuple(int(v + (255 - v) * f) for v in c)  # type: ignore[return-value]


def _line_colour(c: RGB) -> RGB:
    """Outline colour for a fill: darker, and never invisible on a light fill."""
    return shade(c, 0.55) if sum(c) < 600 else (150, 150, 162)


class _Pen:
    """ImageDraw in 256-unit coordinates."""

    def __init__(self, draw: ImageDraw.ImageDraw, scale: float) -> None:
        self.draw, self.s = draw, scale

    def _pts(self, pts: Sequence[Point]) -> list[Point]:
        return [(x * self.s, y * self.s) for x, y in pts]

    def _w(self, width: float) -> int:
        return max(1, round(width * self.s))

    def polygon(self, pts: Sequence[Point], fill: RGB | None = None, outline: RGB | None = None,
                width: float = 1.0) -> None:
        if len(pts) >= 3:
            self.draw.polygon(self._pts(pts), fill=fill, outline=outline, width=self._w(width) if outline else 0)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB | None = None,
                outline: RGB | None = None, width: float = 1.0) -> None:
        box = [(cx - rx) * self.s, (cy - ry) * self.s, (cx + rx) * self.s, (cy + ry) * self.s]
        self.draw.ellipse(box, fill=fill, outline=outline, width=self._w(width) if outline else 0)

    def line(self, pts: Sequence[Point], fill: RGB, width: float = 1.0) -> None:
        self.draw.line(self._pts(pts), fill=fill, width=self._w(width), joint="curve")

    def arc(self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, fill: RGB,
            width: float = 1.0) -> None:
        """Arc of an ellipse; angles in degrees, 0 = right, 90 = down (PIL's convention)."""
        box = [(cx - rx) * self.s, (cy - ry) * self.s, (cx + rx) * self.s, (cy + ry) * self.s]
        self.draw.arc(box, start, end, fill=fill, width=self._w(width))

    def chord(self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, fill: RGB) -> None:
        box = [(cx - rx) * self.s, (cy - ry) * self.s, (cx + rx) * self.s, (cy + ry) * self.s]
        self.draw.chord(box, start, end, fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB | None = None,
             outline: RGB | None = None, width: float = 1.0, radius: float = 0.0) -> None:
        box = [x0 * self.s, y0 * self.s, x1 * self.s, y1 * self.s]
        self.draw.rounded_rectangle(box, radius=radius * self.s, fill=fill, outline=outline,
                                    width=self._w(width) if outline else 0)


def _ellipse_pts(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> list[Point]:
    """n+1 points along an ellipse from angle a0 to a1 (radians, 0 = right, pi/2 = down)."""
    return [(cx + rx * math.cos(a0 + (a1 - a0) * i / n), cy + ry * math.sin(a0 + (a1 - a0) * i / n))
            for i in range(n + 1)]


def _bezier(p0: Point, p1: Point, p2: Point, n: int) -> list[Point]:
    return [((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t * t * p2[0],
             (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t * t * p2[1])
            for t in (i / (n - 1) for i in range(n))]


def _clip_below(poly: Sequence[Point], y0: float) -> list[Point]:
    """The part of a polygon at or below y = y0 (one Sutherland-Hodgman step)."""
    out: list[Point] = []
    for i, cur in enumerate(poly):
        nxt = poly[(i + 1) % len(poly)]
        cur_in, nxt_in = cur[1] >= y0, nxt[1] >= y0
        if cur_in:
            out.append(cur)
        if cur_in != nxt_in:
            t = (y0 - cur[1]) / (nxt[1] - cur[1])
            out.append((cur[0] + t * (nxt[0] - cur[0]), y0))
    return out


def _texture_offset(texture: str, s: float, i: int, rng: random.Random) -> float:
    """Sideways displacement of a hair edge at fraction s of its length (the texture cue)."""
    if texture == "wavy":
        return 4.5 * math.sin(s * math.pi * 6)
    if texture == "curly":
        return 5.0 * abs(math.sin(s * math.pi * 8)) - 2.5
    if texture == "spiky":
        return 4.0 if i % 2 else -3.0
    if texture == "messy":
        return rng.uniform(-4.0, 4.0)
    return 0.0


def _tube(centre: Sequence[Point], half: Sequence[float], texture: str,
          rng: random.Random) -> tuple[list[Point], list[Point]]:
    """Left and right edges of a strand along `centre` with half-widths `half`."""
    left, right = [], []
    n = len(centre)
    for i, (x, y) in enumerate(centre):
        (x0, y0), (x1, y1) = centre[max(i - 1, 0)], centre[min(i + 1, n - 1)]
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = -(y1 - y0) / length, (x1 - x0) / length
        s = i / (n - 1)
        if texture == "wavy":  # the whole strand waves
            shift = _texture_offset(texture, s, i, rng)
            x, y = x + nx * shift, y + ny * shift
            hl = hr = half[i]
        else:
            hl = half[i] + _texture_offset(texture, s, i, rng) * min(1.0, half[i] / 6)
            hr = half[i] + _texture_offset(texture, s, i + 1, rng) * min(1.0, half[i] / 6)
        left.append((x + nx * max(hl, 0.5), y + ny * max(hl, 0.5)))
        right.append((x - nx * max(hr, 0.5), y - ny * max(hr, 0.5)))
    return left, right


def _outline(left: list[Point], right: list[Point]) -> list[Point]:
    return left + right[::-1]


# -- geometry -----------------------------------------------------------------------------------------

_EYE_SCALE = {"child": 1.16, "teen": 1.0, "young_adult": 0.94, "adult": 0.88, "middle_aged": 0.85, "elderly": 0.8}
_FACE_LENGTH = {"child": 0.98, "teen": 1.08, "young_adult": 1.12, "adult": 1.15, "middle_aged": 1.16, "elderly": 1.14}
_SHOULDERS = {"petite": 50, "average": 58, "athletic": 70, "curvy": 56, "plump": 66}


@dataclass(frozen=True)
class _Geo:
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


def _geometry(spec: CharacterSpec, v: Variation) -> _Geo:
    rx = v.head_rx + (3 if spec.body_type == "plump" else 0) - (2 if spec.age == "child" else 0)
    ry = v.head_rx * _FACE_LENGTH[spec.age]
    cx, cy = 128 + v.dx, 96 + v.dy
    sw = _SHOULDERS[spec.body_type] * (0.82 if spec.age == "child" else 1.0) + (4 if spec.gender == "male" else 0)
    if spec.skin_tone == "colored":
        skin = COLORED_SKIN_RGB[int(v.outfit_pick * 97) % len(COLORED_SKIN_RGB)]
    else:
        skin = SKIN_RGB[spec.skin_tone]
    e = _EYE_SCALE[spec.age]
    return _Geo(cx=cx, cy=cy, rx=rx, ry=ry, lw=v.line, y_sh=cy + ry + 18, sw=sw,
                neck=13 if spec.gender == "male" else 10.5, eye_y=cy + ry * 0.16, eye_gap=v.eye_gap,
                eye_rx=9.5 * e, eye_ry=12.0 * e, mouth_y=cy + ry * 0.64, skin=skin, skin_line=shade(skin, 0.62))


# -- background ---------------------------------------------------------------------------------------


def _background(pen: _Pen, v: Variation) -> None:
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


# -- hair -----------------------------------------------------------------------------------------------


class _Hair:
    """Hair in three layers: back mass (behind the body), tails (over the body, behind the face)
    and front (cap, bangs, side locks, over the face)."""

    def __init__(self, pen: _Pen, spec: CharacterSpec, v: Variation, g: _Geo) -> None:
        self.pen, self.spec, self.v, self.g = pen, spec, v, g
        self.colours = tuple(HAIR_RGB[c] for c in spec.hair_color)
        self.line = _line_colour(self.colours[0]) if self.colours else g.skin_line
        self.shape, self.texture = spec.hair_shape, spec.hair_texture
        self.length = spec.hair_length
        self.rng = random.Random(v.detail_seed)  # messy strands; a fresh stream per picture
        # How far down the hair reaches: the hair length cue.
        self.end = {"short": g.cy + g.ry * 0.78, "medium": g.y_sh + 8, "long": g.y_sh + 48,
                    "very_long": g.y_sh + 100}.get(self.length, g.cy)
        self.tied = self.shape in ("ponytail", "side_ponytail", "twintails", "braid")

    def piece(self, poly: Sequence[Point], split: bool = True, colour: RGB | None = None) -> None:
        """One hair polygon: first colour (or `colour`), the lower part in the second colour, outlined."""
        self.pen.polygon(poly, fill=colour or self.colours[0])
        if len(self.colours) > 1 and split:
            ys = [p[1] for p in poly]
            self.pen.polygon(_clip_below(poly, min(ys) + 0.55 * (max(ys) - min(ys))), fill=self.colours[1])
        self.pen.polygon(poly, outline=self.line, width=self.g.lw)

    # back ------------------------------------------------------------------------------------------
    def back(self) -> None:
        if self.length in ("bald", "very_short") or self.tied:
            return
        g = self.g
        flare = {"short": 1, "medium": 6, "long": 12, "very_long": 16}[self.length]
        top = _ellipse_pts(g.cx, g.cy - 2, g.rx + 9, g.ry + 9, math.pi, 2 * math.pi, 24)
        n = 16
        right = [(g.cx + g.rx + 9 + flare * (i / (n - 1)) + _texture_offset(self.texture, i / (n - 1), i, self.rng),
                  g.cy + (self.end - g.cy) * i / (n - 1)) for i in range(n)]
        if self.shape == "bob_cut":  # blunt: a flat bottom
            bottom = [(g.cx + g.rx + 9, self.end), (g.cx - g.rx - 9, self.end)]
            right[-1] = (g.cx + g.rx + 9, self.end)
        else:
            w = g.rx + 9 + flare
            bottom = [(g.cx + w * 0.5, self.end - 8), (g.cx, self.end + 2), (g.cx - w * 0.5, self.end - 8)]
        left = [(2 * g.cx - x, y) for x, y in right]
        self.piece(top + right + bottom + left[::-1])

    # tails (over the body, behind the face) --------------------------------------------------------
    def tails(self) -> None:
        g, side = self.g, self.v.side
        long_ = self.length in ("long", "very_long")
        width = 15 if long_ else 11
        if self.shape == "twintails":
            for s in (-1, 1):
                self._tail((g.cx + s * g.rx * 0.78, g.cy - g.ry * 0.62),
                           (g.cx + s * (g.rx + 44), g.cy - g.ry * 0.4), (g.cx + s * (g.rx + 24), self.end), width)
        elif self.shape == "side_ponytail":
            self._tail((g.cx + side * g.rx * 0.94, g.cy - g.ry * 0.22),
                       (g.cx + side * (g.rx + 34), g.cy), (g.cx + side * (g.rx + 18), self.end), width + 2)
        elif self.shape == "ponytail":  # tied at the back of the crown, swinging out to one side
            self._tail((g.cx + side * g.rx * 0.2, g.cy - g.ry * 1.02),
                       (g.cx + side * (g.rx + 52), g.cy - g.ry * 1.1), (g.cx + side * (g.rx + 22), self.end), width + 2)
        elif self.shape == "braid":
            sides = (-1, 1) if self.v.style_pick < 0.35 else (side,)
            for s in sides:
                self._braid(s)

    def _tail(self, attach: Point, ctrl: Point, end: Point, width: float) -> None:
        n = 30
        centre = _bezier(attach, ctrl, end, n)
        ts = [i / (n - 1) for i in range(n)]
        half = [width * (0.45 + 0.55 * math.sin(math.pi * t)) * (1 - 0.85 * t ** 3) for t in ts]  # tied, full, tip
        left, right = _tube(centre, half, self.texture, self.rng)
        self.piece(_outline(left, right))
        self.pen.ellipse(attach[0], attach[1], 5, 5, fill=self.v.accent, outline=_line_colour(self.v.accent),
                         width=self.g.lw * 0.8)

    def _braid(self, s: int) -> None:
        g = self.g
        start = (g.cx + s * g.rx * 0.62, g.cy + g.ry * 0.45)
        end = (g.cx + s * (g.rx * 0.72), self.end - 8)
        n = max(8, int((end[1] - start[1]) / 4))
        centre = _bezier(start, (g.cx + s * (g.rx + 8), (start[1] + end[1]) / 2), end, n)
        half = [9 - 2.5 * i / (n - 1) for i in range(n)]
        left, right = _tube(centre, half, "straight", self.rng)
        self.piece(_outline(left, right))
        for i in range(0, n - 2, 3):  # the plait: chevrons down the braid
            self.pen.line([left[i], centre[i + 2], right[i]], fill=self.line, width=self.g.lw * 0.8)
        ex, ey = centre[-1]
        self.pen.polygon([(ex - 5, ey), (ex + 5, ey), (ex + 7, ey + 12), (ex - 7, ey + 12)],
                         fill=self.colours[-1], outline=self.line, width=self.g.lw * 0.8)
        self.pen.rect(ex - 6, ey - 3, ex + 6, ey + 3, fill=self.v.accent, radius=2)

    # front (over the face) -------------------------------------------------------------------------
    def front(self) -> None:
        if self.length == "bald":
            self.pen.arc(self.g.cx - 8, self.g.cy - self.g.ry * 0.55, 14, 8, 200, 300, fill=tint(self.g.skin, 0.5),
                         width=3)  # a shine on the scalp
            return
        g = self.g
        if self.shape == "bun":
            self._buns()
        if self.texture == "spiky":
            self._spikes()
        self._locks()
        cap = self._cap()
        self.piece(cap, split=False)
        shine = tint(self.colours[0], 0.4)
        for a0 in (222, 262, 290):  # short shine strokes on the crown
            self.pen.arc(g.cx, g.cy - 2, g.rx * 0.8, g.ry * 0.78, a0, a0 + 16, fill=shine, width=2.5)
        if len(self.colours) > 1:  # a streak of the second colour through the bangs
            x = g.cx - self.v.side * g.rx * 0.3
            self.piece([(x - 4, g.cy - g.ry - 4), (x + 4, g.cy - g.ry - 4), (x + 9, g.cy - g.ry * 0.5),
                        (x, g.cy - g.ry * 0.22), (x - 9, g.cy - g.ry * 0.5)], split=False, colour=self.colours[1])
        if self.texture == "messy":
            self._stray_strands()
        if self.shape == "drills":
            self._drills()

    def _cap(self) -> list[Point]:
        g = self.g
        very_short = self.length == "very_short"
        grow = 2.5 if very_short else 6
        arc = []
        for i in range(33):
            a = math.pi + math.pi * i / 32
            bump = 0.06 * abs(math.sin(a * 9)) if self.texture == "curly" else 0.0
            r = 1 + bump
            arc.append((g.cx + (g.rx + grow) * r * math.cos(a), g.cy - 2 + (g.ry + grow) * r * math.sin(a)))
        temple_y = g.cy - g.ry * (0.2 if very_short else -0.12)
        tip_y = g.cy - g.ry * (0.5 if very_short else 0.28)
        notch_y = g.cy - g.ry * (0.66 if very_short else 0.56)
        if self.shape == "bob_cut":  # blunt bangs, cut straight across
            bangs = [(g.cx + g.rx * 0.95, tip_y), (g.cx - g.rx * 0.95, tip_y)]
        else:
            bangs = self._bang_points(tip_y, notch_y)
        return ([(g.cx - g.rx - grow + 1, temple_y)] + arc + [(g.cx + g.rx + grow - 1, temple_y)] + bangs)

    def _bang_points(self, tip_y: float, notch_y: float) -> list[Point]:
        g, tex, rng = self.g, self.texture, self.rng
        strands = 5
        x0, x1 = g.cx + g.rx * 0.98, g.cx - g.rx * 0.98
        pts: list[Point] = []
        for k in range(2 * strands + 1):
            x = x0 + (x1 - x0) * k / (2 * strands)
            if k % 2:  # a notch between two strands
                pts.append((x, notch_y + (rng.uniform(-5, 5) if tex == "messy" else 0)))
                continue
            y = tip_y + (5 if tex == "spiky" else 0) + (rng.uniform(-6, 6) if tex == "messy" else 0)
            if k in (0, 2 * strands):
                y += 6  # the outer strands reach lower, over the temples
            if tex == "curly":  # rounded tips
                pts += [(x + 4, y - 3), (x, y), (x - 4, y - 3)]
            elif tex == "wavy":  # strands sweep sideways
                pts += [(x + 3, y - 6), (x - 3, y)]
            else:
                pts.append((x, y))
        return pts

    def _spikes(self) -> None:
        g = self.g

        def at(angle: float, r: float) -> Point:
            return g.cx + r * (g.rx + 4) * math.cos(angle), g.cy - 2 + r * (g.ry + 4) * math.sin(angle)

        for i in range(7):  # spikes standing out of the crown
            a, half = math.radians(200 + i * 23.3), math.radians(13)
            self.piece([at(a - half, 0.95), at(a, 1.32), at(a + half, 0.95)], split=False)

    def _stray_strands(self) -> None:
        g = self.g
        for _ in range(6):
            a = math.radians(self.rng.uniform(195, 345))
            bx, by = g.cx + (g.rx + 5) * math.cos(a), g.cy - 2 + (g.ry + 5) * math.sin(a)
            turn = a + self.rng.uniform(-0.6, 0.6)
            tip = (bx + 14 * math.cos(turn), by + 14 * math.sin(turn))
            self.pen.line([(bx, by), ((bx + tip[0]) / 2 + 3, (by + tip[1]) / 2), tip], fill=self.line, width=self.g.lw)

    def _locks(self) -> None:
        """Side locks framing the face; their reach shows the hair length."""
        if self.length == "very_short" or self.shape == "drills":
            return
        g = self.g
        end = g.cy + g.ry * 0.5 if self.tied else self.end
        flare = {"short": 3, "medium": 8, "long": 14, "very_long": 16}[self.length] if not self.tied else 2
        blunt = self.shape == "bob_cut"
        for s in (-1, 1):
            n = 24
            top = (g.cx + s * (g.rx - 3), g.cy - g.ry * 0.35)
            centre = _bezier(top, (g.cx + s * (g.rx + 2), (top[1] + end) / 2), (g.cx + s * (g.rx + flare - 2), end), n)
            wide = 6 if self.tied else 9
            half = [wide if blunt else wide * (1 - 0.75 * (i / (n - 1)) ** 2) for i in range(n)]
            left, right = _tube(centre, half, "straight" if blunt else self.texture, self.rng)
            self.piece(_outline(left, right))

    def _buns(self) -> None:
        g = self.g
        spots = ([(g.cx - g.rx * 0.72, g.cy - g.ry * 0.86), (g.cx + g.rx * 0.72, g.cy - g.ry * 0.86)]
                 if self.v.style_pick < 0.5 else [(g.cx + self.v.side * 6, g.cy - g.ry - 10)])
        for x, y in spots:
            self.pen.ellipse(x, y, 16, 15, fill=self.colours[0], outline=self.line, width=self.g.lw)
            self.pen.arc(x, y, 9, 8, 160, 420, fill=self.line, width=self.g.lw * 0.8)

    def _drills(self) -> None:
        g = self.g
        for s in (-1, 1):
            n = 26
            top = (g.cx + s * (g.rx - 2), g.cy - g.ry * 0.15)
            centre = _bezier(top, (g.cx + s * (g.rx + 10), (top[1] + self.end) / 2),
                             (g.cx + s * (g.rx + 8), self.end), n)
            ts = [i / (n - 1) for i in range(n)]
            half = [5 + 9 * math.sin(math.pi * min(1.0, 0.2 + t)) * (1 - 0.7 * t) for t in ts]
            left, right = _tube(centre, half, "straight", self.rng)
            self.piece(_outline(left, right))
            for i in range(1, n - 3, 3):  # the spiral: slanted turns
                self.pen.line([left[i], right[i + 2]], fill=self.line, width=self.g.lw)


# -- body -------------------------------------------------------------------------------------------


def _neck(pen: _Pen, g: _Geo) -> None:
    pen.rect(g.cx - g.neck, g.cy + g.ry * 0.5, g.cx + g.neck, g.y_sh + 6, fill=g.skin, outline=g.skin_line,
             width=g.lw)
    pen.chord(g.cx, g.cy + g.ry * 0.92, g.neck + 1, 9, 0, 180, fill=shade(g.skin, 0.85))  # shadow under the chin


def _torso(g: _Geo, body: str) -> list[Point]:
    drop = 9 if body == "athletic" else 16
    half = [(g.neck + 3, g.y_sh - 5), (g.sw * 0.7, g.y_sh + 1), (g.sw * 0.97, g.y_sh + drop * 0.6),
            (g.sw, g.y_sh + drop + 6), (g.sw + 2, 264)]
    right = [(g.cx + x, y) for x, y in half]
    left = [(g.cx - x, y) for x, y in reversed(half)]
    return left + right


def _arm_lines(g: _Geo, body: str) -> list[list[Point]]:
    """Where the arms meet the torso; the waist and hips they draw show the body type."""
    mid, bottom = {"petite": (0.72, 0.74), "average": (0.74, 0.78), "athletic": (0.6, 0.58),
                   "curvy": (0.56, 0.8), "plump": (0.92, 0.9)}[body]
    lines = []
    for s in (-1, 1):
        lines.append([(g.cx + s * g.sw * 0.8, g.y_sh + 32), (g.cx + s * g.sw * mid, g.y_sh + 62),
                      (g.cx + s * g.sw * bottom, 264)])
    return lines


def _body(pen: _Pen, spec: CharacterSpec, v: Variation, g: _Geo) -> None:
    palette = OUTFIT_RGB[spec.clothing]
    main = palette[int(v.outfit_pick * len(palette))]
    torso = _torso(g, spec.body_type)
    skin_shows = spec.clothing == "swimsuit"
    fill = g.skin if skin_shows else (248, 248, 250) if spec.clothing == "school_uniform" else main
    line = g.skin_line if skin_shows else _line_colour(fill)
    pen.polygon(torso, fill=fill, outline=line, width=g.lw)
    _OUTFITS[spec.clothing](pen, g, v, main, spec)
    for pts in _arm_lines(g, spec.body_type):
        pen.line(pts, fill=line, width=g.lw)
    _body_cues(pen, spec, g, line, skin_shows)


def _body_cues(pen: _Pen, spec: CharacterSpec, g: _Geo, line: RGB, skin_shows: bool) -> None:
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


def _school_uniform(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    collar = [(cx - g.neck - 3, top - 6), (cx - g.sw * 0.78, top + 4), (cx - g.sw * 0.58, top + 34), (cx, top + 52),
              (cx + g.sw * 0.58, top + 34), (cx + g.sw * 0.78, top + 4), (cx + g.neck + 3, top - 6), (cx, top + 30)]
    pen.polygon(collar, fill=main, outline=_line_colour(main), width=g.lw)
    pen.line([(cx - g.sw * 0.7, top + 6), (cx - g.sw * 0.52, top + 31), (cx, top + 46), (cx + g.sw * 0.52, top + 31),
              (cx + g.sw * 0.7, top + 6)], fill=WHITE, width=2)  # the collar stripe
    red = (214, 40, 56)
    pen.polygon([(cx - 11, top + 40), (cx + 11, top + 40), (cx, top + 52)], fill=red, outline=shade(red, 0.6),
                width=g.lw)  # the neckerchief
    pen.polygon([(cx - 3, top + 50), (cx - 12, top + 76), (cx - 3, top + 74)], fill=red)
    pen.polygon([(cx + 3, top + 50), (cx + 12, top + 76), (cx + 3, top + 74)], fill=red)


def _dress(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    for s in (-1, 1):  # puffed sleeves
        pen.ellipse(cx + s * g.sw * 0.86, top + 16, 15, 14, fill=tint(main, 0.15), outline=_line_colour(main),
                    width=g.lw)
    pen.chord(cx, top - 4, 22, 20, 0, 180, fill=g.skin)  # scoop neckline
    for i in range(9):  # frills along it
        a = math.radians(10 + i * 20)
        pen.ellipse(cx + 23 * math.cos(a), top - 4 + 21 * math.sin(a), 3.5, 3.5, fill=WHITE, outline=(200, 200, 210),
                    width=0.6)
    pen.ellipse(cx, top + 24, 6, 4, fill=v.accent, outline=_line_colour(v.accent), width=0.8)  # a bow at the chest
    pen.polygon([(cx - 5, top + 24), (cx - 16, top + 17), (cx - 16, top + 31)], fill=v.accent)
    pen.polygon([(cx + 5, top + 24), (cx + 16, top + 17), (cx + 16, top + 31)], fill=v.accent)


def _casual(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    pen.arc(cx, top - 2, g.neck + 13, 14, 0, 180, fill=shade(main, 0.8), width=9)  # hood around the neck
    for s in (-1, 1):  # drawstrings
        pen.line([(cx + s * 6, top + 8), (cx + s * 7, top + 38)], fill=WHITE, width=2)
        pen.ellipse(cx + s * 7, top + 40, 2, 3, fill=WHITE)
    pen.rect(cx - 28, top + 64, cx + 28, top + 100, outline=_line_colour(main), width=g.lw, radius=8)  # pocket


def _formal(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    pen.polygon([(cx - g.neck - 4, top - 6), (cx + g.neck + 4, top - 6), (cx, top + 60)], fill=WHITE,
                outline=(170, 170, 180), width=g.lw * 0.7)  # shirt
    tie = v.accent if v.accent not in ((250, 250, 250), (30, 30, 36)) else (170, 30, 50)
    pen.polygon([(cx - 4, top - 2), (cx + 4, top - 2), (cx + 6, top + 40), (cx, top + 50), (cx - 6, top + 40)],
                fill=tie, outline=_line_colour(tie), width=g.lw * 0.7)
    for s in (-1, 1):  # lapels
        pen.polygon([(cx + s * (g.neck + 4), top - 6), (cx + s * (g.neck + 14), top + 10), (cx + s * 4, top + 62),
                     (cx + s * 2, top + 60)], fill=shade(main, 0.75), outline=_line_colour(main), width=g.lw * 0.7)
    pen.ellipse(cx, top + 72, 2.6, 2.6, fill=(200, 200, 210))


def _traditional(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    flower = tint(main, 0.45)
    for fx, fy in ((-0.6, 30), (0.5, 22), (0.75, 52), (-0.45, 70), (0.2, 84)):  # a simple print
        pen.ellipse(cx + fx * g.sw, top + fy, 5, 5, fill=flower)
    pen.line([(cx + g.neck + 2, top - 6), (cx - 4, top + 36)], fill=WHITE, width=7)  # collars, left over right
    pen.line([(cx - g.neck - 2, top - 6), (cx + 12, top + 48)], fill=WHITE, width=7)
    pen.line([(cx - g.neck - 2, top - 6), (cx + 12, top + 48)], fill=shade(main, 0.6), width=1.2)
    obi = v.accent if v.accent != main else GOLD
    pen.rect(cx - g.sw - 4, top + 58, cx + g.sw + 4, top + 82, fill=obi, outline=_line_colour(obi), width=g.lw)
    pen.line([(cx - g.sw - 4, top + 70), (cx + g.sw + 4, top + 70)], fill=shade(obi, 0.6), width=2)


def _swimsuit(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    line = _line_colour(main)
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


def _uniform(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    if v.style_pick < 0.5:  # maid: black dress, white apron and collar
        pen.polygon(_torso(g, spec.body_type), fill=(34, 34, 44))
        pen.rect(cx - 22, top + 24, cx + 22, 264, fill=WHITE, outline=(170, 170, 180), width=g.lw)
        for i in range(6):
            pen.ellipse(cx - 19 + i * 7.6, top + 24, 4, 3, fill=WHITE, outline=(170, 170, 180), width=0.6)
        for s in (-1, 1):
            pen.polygon([(cx + s * 2, top - 4), (cx + s * (g.neck + 12), top - 2), (cx + s * 10, top + 12)],
                        fill=WHITE, outline=(170, 170, 180), width=g.lw * 0.7)
        return
    for s in (-1, 1):  # military: epaulettes and two rows of buttons
        pen.rect(cx + s * g.sw * 0.55 - 11, top + 2, cx + s * g.sw * 0.55 + 11, top + 9, fill=GOLD,
                 outline=shade(GOLD, 0.6), width=0.8)
        for row in range(4):
            pen.ellipse(cx + s * 12, top + 22 + row * 16, 3, 3, fill=GOLD, outline=shade(GOLD, 0.6), width=0.6)
    pen.rect(cx - g.neck - 4, top - 8, cx + g.neck + 4, top + 2, fill=shade(main, 0.7))  # stand collar
    pen.line([(cx, top + 2), (cx, 264)], fill=_line_colour(main), width=g.lw)


def _armor(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
    cx, top = g.cx, g.y_sh
    line = _line_colour(main)
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


def _sleepwear(pen: _Pen, g: _Geo, v: Variation, main: RGB, spec: CharacterSpec) -> None:
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
                     (cx + s * 3, top + 14)], fill=tint(main, 0.4), outline=_line_colour(main), width=g.lw * 0.8)
    pen.line([(cx, top + 14), (cx, 264)], fill=_line_colour(main), width=g.lw * 0.8)
    for row in range(4):
        pen.ellipse(cx + 5, top + 26 + row * 18, 2.5, 2.5, fill=WHITE, outline=_line_colour(main), width=0.6)


_OUTFITS = {"school_uniform": _school_uniform, "dress": _dress, "casual": _casual, "formal": _formal,
            "traditional": _traditional, "swimsuit": _swimsuit, "uniform": _uniform, "armor": _armor,
            "sleepwear": _sleepwear}


def _neck_accessories(pen: _Pen, spec: CharacterSpec, v: Variation, g: _Geo) -> None:
    cx, top = g.cx, g.y_sh
    acc = spec.accessories
    if "choker" in acc:
        y = g.cy + g.ry + 6
        pen.rect(cx - g.neck - 0.5, y - 3.5, cx + g.neck + 0.5, y + 3.5, fill=(28, 26, 32))
        pen.ellipse(cx, y + 5, 3, 3, fill=GOLD, outline=shade(GOLD, 0.6), width=0.6)
    if "necklace" in acc:
        beads = _ellipse_pts(cx, top - 6, g.neck + 10, 26, math.radians(15), math.radians(165), 14)
        pen.line(beads, fill=GOLD, width=1.5)
        for x, y in beads[1:-1:2]:
            pen.ellipse(x, y, 2, 2, fill=GOLD)
        pen.ellipse(cx, top + 24, 4.5, 5.5, fill=v.accent if v.accent != (250, 250, 250) else (60, 160, 220),
                    outline=GOLD, width=1.2)
    if "scarf" in acc:
        line = _line_colour(v.item)
        pen.rect(cx - g.neck - 12, g.cy + g.ry + 2, cx + g.neck + 12, g.cy + g.ry + 20, fill=v.item, outline=line,
                 width=g.lw, radius=8)
        tail_x = cx + v.side * 12
        pen.polygon([(tail_x - 8, top), (tail_x + 8, top), (tail_x + 10, top + 50), (tail_x - 6, top + 50)],
                    fill=v.item, outline=line, width=g.lw)
        for y in (top + 36, top + 43):
            pen.line([(tail_x - 7, y), (tail_x + 9, y)], fill=tint(v.item, 0.5), width=2)


# -- face -------------------------------------------------------------------------------------------


def _face(pen: _Pen, spec: CharacterSpec, g: _Geo) -> None:
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


def _eye(pen: _Pen, spec: CharacterSpec, g: _Geo, x: float, s: int, iris: RGB) -> None:
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


def _brows(pen: _Pen, spec: CharacterSpec, g: _Geo) -> None:
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


def _age_lines(pen: _Pen, spec: CharacterSpec, g: _Geo) -> None:
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


def _mouth(pen: _Pen, spec: CharacterSpec, g: _Geo) -> None:
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


# -- head accessories -------------------------------------------------------------------------------------


def _head_accessories(pen: _Pen, spec: CharacterSpec, v: Variation, g: _Geo, hair: _Hair) -> None:
    acc, cx, cy, lw = spec.accessories, g.cx, g.cy, g.lw
    item, item_line = v.item, _line_colour(v.item)
    if "mask" in acc:
        mask = WHITE if v.style_pick < 0.7 else (34, 34, 40)
        y0, y1 = cy + g.ry * 0.32, cy + g.ry * 0.9
        pen.rect(cx - g.rx * 0.72, y0, cx + g.rx * 0.72, y1, fill=mask, outline=_line_colour(mask), width=lw, radius=10)
        for k in (0.35, 0.6):
            y = y0 + (y1 - y0) * k
            pen.line([(cx - g.rx * 0.6, y), (cx + g.rx * 0.6, y)], fill=_line_colour(mask), width=lw * 0.6)
        for s in (-1, 1):
            pen.line([(cx + s * g.rx * 0.72, y0 + 4), (cx + s * g.rx * 0.97, cy + g.ry * 0.14)],
                     fill=_line_colour(mask), width=lw)  # ear loops
    if "glasses" in acc:
        frame = (38, 34, 40) if v.style_pick < 0.6 else (170, 40, 50)
        for s in (-1, 1):
            ex = cx + s * g.eye_gap
            pen.rect(ex - g.eye_rx - 4, g.eye_y - g.eye_ry * 0.75, ex + g.eye_rx + 4, g.eye_y + g.eye_ry + 3,
                     outline=frame, width=lw * 1.1, radius=5)
            pen.line([(ex + s * (g.eye_rx + 4), g.eye_y - 2), (cx + s * g.rx * 0.98, g.eye_y - 4)], fill=frame,
                     width=lw)  # temples
        inner = g.eye_gap - g.eye_rx - 4
        pen.line([(cx - inner, g.eye_y - 1), (cx, g.eye_y - 4), (cx + inner, g.eye_y - 1)], fill=frame, width=lw)
    if "earrings" in acc:
        for s in (-1, 1):
            ex, ey = cx + s * g.rx * 0.98, cy + g.ry * 0.34
            pen.ellipse(ex, ey, 2.2, 2.2, fill=GOLD)
            pen.ellipse(ex, ey + 7, 4, 5, outline=GOLD, width=1.6)
    if "hairband" in acc:
        pen.arc(cx, cy - 2, g.rx + 4, g.ry + 4, 200, 340, fill=item, width=7)
        pen.arc(cx, cy - 2, g.rx + 7.5, g.ry + 7.5, 205, 335, fill=item_line, width=1)
    if "headphones" in acc:
        pen.arc(cx, cy - 4, g.rx + 12, g.ry + 14, 185, 355, fill=(60, 60, 70), width=6)
        for s in (-1, 1):
            pen.rect(cx + s * (g.rx + 9) - 8, cy - 4, cx + s * (g.rx + 9) + 8, cy + 26, fill=item, outline=item_line,
                     width=lw, radius=7)
            pen.rect(cx + s * (g.rx + 9) - 3, cy + 2, cx + s * (g.rx + 9) + 3, cy + 20, fill=tint(item, 0.4), radius=3)
    if "hair_ornament" in acc:  # an X-shaped clip on the bangs
        hx, hy = cx - v.side * g.rx * 0.5, cy - g.ry * 0.45
        clip = GOLD if v.accent in ((250, 250, 250), (240, 200, 60)) else v.accent
        pen.line([(hx - 6, hy - 6), (hx + 6, hy + 6)], fill=clip, width=3.2)
        pen.line([(hx - 6, hy + 6), (hx + 6, hy - 6)], fill=clip, width=3.2)
    if "hair_ribbon" in acc:
        rx_, ry_ = cx + v.side * g.rx * 0.72, cy - g.ry * 0.72
        ribbon = v.accent if v.accent != hair.colours[0] else (214, 40, 56)
        rl = _line_colour(ribbon)
        pen.polygon([(rx_, ry_), (rx_ - 16, ry_ - 11), (rx_ - 14, ry_ + 10)], fill=ribbon, outline=rl, width=lw * 0.8)
        pen.polygon([(rx_, ry_), (rx_ + 16, ry_ - 11), (rx_ + 14, ry_ + 10)], fill=ribbon, outline=rl, width=lw * 0.8)
        pen.ellipse(rx_, ry_, 4, 4, fill=ribbon, outline=rl, width=lw * 0.8)
    if "hat" in acc:
        _hat(pen, v, g)


def _hat(pen: _Pen, v: Variation, g: _Geo) -> None:
    cx, cy, rx, ry, lw = g.cx, g.cy, g.rx, g.ry, g.lw
    colour, line = v.item, _line_colour(v.item)
    band = v.accent if v.accent != colour else WHITE
    if v.hat_kind == "beret":
        pen.ellipse(cx + 6, cy - ry * 0.82, rx + 10, 17, fill=colour, outline=line, width=lw)
        pen.ellipse(cx + 8, cy - ry * 0.82 - 16, 3, 3, fill=colour, outline=line, width=lw)
    elif v.hat_kind == "witch_hat":
        pen.polygon([(cx - rx * 0.7, cy - ry * 0.78), (cx + 26, cy - ry - 46), (cx + rx * 0.7, cy - ry * 0.78)],
                    fill=colour, outline=line, width=lw)
        pen.ellipse(cx, cy - ry * 0.74, rx * 1.55, 11, fill=colour, outline=line, width=lw)
        pen.polygon([(cx - rx * 0.64, cy - ry * 0.86), (cx + rx * 0.64, cy - ry * 0.86),
                     (cx + rx * 0.6, cy - ry * 0.98), (cx - rx * 0.6, cy - ry * 0.98)], fill=band)
    elif v.hat_kind == "baseball_cap":
        pen.chord(cx, cy - ry * 0.45, rx + 6, ry * 0.72, 180, 360, fill=colour)
        pen.arc(cx, cy - ry * 0.45, rx + 6, ry * 0.72, 180, 360, fill=line, width=lw)
        pen.ellipse(cx, cy - ry * 0.45, rx * 0.95, 7, fill=shade(colour, 0.75), outline=line, width=lw)  # the visor
        pen.ellipse(cx, cy - ry * 0.45 - ry * 0.72, 3, 3, fill=band)
    else:  # sun hat: a wide brim with a band
        straw = (236, 212, 150)
        pen.ellipse(cx, cy - ry * 0.7, rx * 1.8, 15, fill=straw, outline=_line_colour(straw), width=lw)
        pen.chord(cx, cy - ry * 0.72, rx * 0.85, ry * 0.55, 180, 360, fill=straw)
        pen.arc(cx, cy - ry * 0.72, rx * 0.85, ry * 0.55, 180, 360, fill=_line_colour(straw), width=lw)
        pen.rect(cx - rx * 0.85, cy - ry * 0.84, cx + rx * 0.85, cy - ry * 0.72, fill=band)
