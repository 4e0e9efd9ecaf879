"""Hair: back, tails and front layers, shaped by length, style and texture."""

from __future__ import annotations

import math
import random
from typing import Sequence

from .geometry import Layout
from .palette import HAIR_RGB, RGB, Point
from .pen import Pen, bezier, clip_below, ellipse_points, join_outline, line_colour, texture_offset, tint, tube
from .spec import CharacterSpec, Variation


class Hair:
    """Hair in three layers: back mass (behind the body), tails (over the body, behind the face)
    and front (cap, bangs, side locks, over the face)."""

    def __init__(self, pen: Pen, spec: CharacterSpec, v: Variation, g: Layout) -> None:
        self.pen, self.spec, self.v, self.g = pen, spec, v, g
        self.colours = tuple(HAIR_RGB[c] for c in spec.hair_color)
        self.line = line_colour(self.colours[0]) if self.colours else g.skin_line
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
            self.pen.polygon(clip_below(poly, min(ys) + 0.55 * (max(ys) - min(ys))), fill=self.colours[1])
        self.pen.polygon(poly, outline=self.line, width=self.g.lw)

    # back ------------------------------------------------------------------------------------------
    def back(self) -> None:
        if self.length in ("bald", "very_short") or self.tied:
            return
        g = self.g
        flare = {"short": 1, "medium": 6, "long": 12, "very_long": 16}[self.length]
        top = ellipse_points(g.cx, g.cy - 2, g.rx + 9, g.ry + 9, math.pi, 2 * math.pi, 24)
        n = 16
        right = [(g.cx + g.rx + 9 + flare * (i / (n - 1)) + texture_offset(self.texture, i / (n - 1), i, self.rng),
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
        centre = bezier(attach, ctrl, end, n)
        ts = [i / (n - 1) for i in range(n)]
        half = [width * (0.45 + 0.55 * math.sin(math.pi * t)) * (1 - 0.85 * t ** 3) for t in ts]  # tied, full, tip
        left, right = tube(centre, half, self.texture, self.rng)
        self.piece(join_outline(left, right))
        self.pen.ellipse(attach[0], attach[1], 5, 5, fill=self.v.accent, outline=line_colour(self.v.accent),
                         width=self.g.lw * 0.8)

    def _braid(self, s: int) -> None:
        g = self.g
        start = (g.cx + s * g.rx * 0.62, g.cy + g.ry * 0.45)
        end = (g.cx + s * (g.rx * 0.72), self.end - 8)
        n = max(8, int((end[1] - start[1]) / 4))
        centre = bezier(start, (g.cx + s * (g.rx + 8), (start[1] + end[1]) / 2), end, n)
        half = [9 - 2.5 * i / (n - 1) for i in range(n)]
        left, right = tube(centre, half, "straight", self.rng)
        self.piece(join_outline(left, right))
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
            centre = bezier(top, (g.cx + s * (g.rx + 2), (top[1] + end) / 2), (g.cx + s * (g.rx + flare - 2), end), n)
            wide = 6 if self.tied else 9
            half = [wide if blunt else wide * (1 - 0.75 * (i / (n - 1)) ** 2) for i in range(n)]
            left, right = tube(centre, half, "straight" if blunt else self.texture, self.rng)
            self.piece(join_outline(left, right))

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
            centre = bezier(top, (g.cx + s * (g.rx + 10), (top[1] + self.end) / 2),
                             (g.cx + s * (g.rx + 8), self.end), n)
            ts = [i / (n - 1) for i in range(n)]
            half = [5 + 9 * math.sin(math.pi * min(1.0, 0.2 + t)) * (1 - 0.7 * t) for t in ts]
            left, right = tube(centre, half, "straight", self.rng)
            self.piece(join_outline(left, right))
            for i in range(1, n - 3, 3):  # the spiral: slanted turns
                self.pen.line([left[i], right[i + 2]], fill=self.line, width=self.g.lw)


