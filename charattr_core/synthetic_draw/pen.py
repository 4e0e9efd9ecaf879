"""Drawing primitives in 256-unit canvas coordinates: colours, the pen, curves and outlines."""

from __future__ import annotations

import math
import random
from typing import Sequence

from PIL import ImageDraw

from .palette import RGB, Point


def jitter(c: RGB, rng: random.Random, amount: int) -> RGB:
    return tuple(min(255, max(0, v + rng.randint(-amount, amount))) for v in c)  # type: ignore[return-value]


def shade(c: RGB, f: float) -> RGB:
    """`c` darkened (f < 1) towards black."""
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def tint(c: RGB, f: float) -> RGB:
    """`c` lightened towards white by fraction f."""
    return tuple(int(v + (255 - v) * f) for v in c)  # type: ignore[return-value]


def line_colour(c: RGB) -> RGB:
    """Outline colour for a fill: darker, and never invisible on a light fill."""
    return shade(c, 0.55) if sum(c) < 600 else (150, 150, 162)


class Pen:
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


def ellipse_points(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> list[Point]:
    """n+1 points along an ellipse from angle a0 to a1 (radians, 0 = right, pi/2 = down)."""
    return [(cx + rx * math.cos(a0 + (a1 - a0) * i / n), cy + ry * math.sin(a0 + (a1 - a0) * i / n))
            for i in range(n + 1)]


def bezier(p0: Point, p1: Point, p2: Point, n: int) -> list[Point]:
    return [((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t * t * p2[0],
             (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t * t * p2[1])
            for t in (i / (n - 1) for i in range(n))]


def clip_below(poly: Sequence[Point], y0: float) -> list[Point]:
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


def texture_offset(texture: str, s: float, i: int, rng: random.Random) -> float:
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


def tube(centre: Sequence[Point], half: Sequence[float], texture: str,
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
            shift = texture_offset(texture, s, i, rng)
            x, y = x + nx * shift, y + ny * shift
            hl = hr = half[i]
        else:
            hl = half[i] + texture_offset(texture, s, i, rng) * min(1.0, half[i] / 6)
            hr = half[i] + texture_offset(texture, s, i + 1, rng) * min(1.0, half[i] / 6)
        left.append((x + nx * max(hl, 0.5), y + ny * max(hl, 0.5)))
        right.append((x - nx * max(hr, 0.5), y - ny * max(hr, 0.5)))
    return left, right


def join_outline(left: list[Point], right: list[Point]) -> list[Point]:
    return left + right[::-1]


