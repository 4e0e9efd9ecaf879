"""Accessories around the neck and on the head (glasses, hats, ribbons, headphones, mask, ...)."""

from __future__ import annotations

import math

from .geometry import Layout
from .hair import Hair
from .palette import GOLD, WHITE
from .pen import Pen, ellipse_points, line_colour, shade, tint
from .spec import CharacterSpec, Variation


def draw_neck_accessories(pen: Pen, spec: CharacterSpec, v: Variation, g: Layout) -> None:
    cx, top = g.cx, g.y_sh
    acc = spec.accessories
    if "choker" in acc:
        y = g.cy + g.ry + 6
        pen.rect(cx - g.neck - 0.5, y - 3.5, cx + g.neck + 0.5, y + 3.5, fill=(28, 26, 32))
        pen.ellipse(cx, y + 5, 3, 3, fill=GOLD, outline=shade(GOLD, 0.6), width=0.6)
    if "necklace" in acc:
        beads = ellipse_points(cx, top - 6, g.neck + 10, 26, math.radians(15), math.radians(165), 14)
        pen.line(beads, fill=GOLD, width=1.5)
        for x, y in beads[1:-1:2]:
            pen.ellipse(x, y, 2, 2, fill=GOLD)
        pen.ellipse(cx, top + 24, 4.5, 5.5, fill=v.accent if v.accent != (250, 250, 250) else (60, 160, 220),
                    outline=GOLD, width=1.2)
    if "scarf" in acc:
        line = line_colour(v.item)
        pen.rect(cx - g.neck - 12, g.cy + g.ry + 2, cx + g.neck + 12, g.cy + g.ry + 20, fill=v.item, outline=line,
                 width=g.lw, radius=8)
        tail_x = cx + v.side * 12
        pen.polygon([(tail_x - 8, top), (tail_x + 8, top), (tail_x + 10, top + 50), (tail_x - 6, top + 50)],
                    fill=v.item, outline=line, width=g.lw)
        for y in (top + 36, top + 43):
            pen.line([(tail_x - 7, y), (tail_x + 9, y)], fill=tint(v.item, 0.5), width=2)





def draw_head_accessories(pen: Pen, spec: CharacterSpec, v: Variation, g: Layout, hair: Hair) -> None:
    acc, cx, cy, lw = spec.accessories, g.cx, g.cy, g.lw
    item, item_line = v.item, line_colour(v.item)
    if "mask" in acc:
        mask = WHITE if v.style_pick < 0.7 else (34, 34, 40)
        y0, y1 = cy + g.ry * 0.32, cy + g.ry * 0.9
        pen.rect(cx - g.rx * 0.72, y0, cx + g.rx * 0.72, y1, fill=mask, outline=line_colour(mask), width=lw, radius=10)
        for k in (0.35, 0.6):
            y = y0 + (y1 - y0) * k
            pen.line([(cx - g.rx * 0.6, y), (cx + g.rx * 0.6, y)], fill=line_colour(mask), width=lw * 0.6)
        for s in (-1, 1):
            pen.line([(cx + s * g.rx * 0.72, y0 + 4), (cx + s * g.rx * 0.97, cy + g.ry * 0.14)],
                     fill=line_colour(mask), width=lw)  # ear loops
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
        rl = line_colour(ribbon)
        pen.polygon([(rx_, ry_), (rx_ - 16, ry_ - 11), (rx_ - 14, ry_ + 10)], fill=ribbon, outline=rl, width=lw * 0.8)
        pen.polygon([(rx_, ry_), (rx_ + 16, ry_ - 11), (rx_ + 14, ry_ + 10)], fill=ribbon, outline=rl, width=lw * 0.8)
        pen.ellipse(rx_, ry_, 4, 4, fill=ribbon, outline=rl, width=lw * 0.8)
    if "hat" in acc:
        _hat(pen, v, g)


def _hat(pen: Pen, v: Variation, g: Layout) -> None:
    cx, cy, rx, ry, lw = g.cx, g.cy, g.rx, g.ry, g.lw
    colour, line = v.item, line_colour(v.item)
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
        pen.ellipse(cx, cy - ry * 0.7, rx * 1.8, 15, fill=straw, outline=line_colour(straw), width=lw)
        pen.chord(cx, cy - ry * 0.72, rx * 0.85, ry * 0.55, 180, 360, fill=straw)
        pen.arc(cx, cy - ry * 0.72, rx * 0.85, ry * 0.55, 180, 360, fill=line_colour(straw), width=lw)
        pen.rect(cx - rx * 0.85, cy - ry * 0.84, cx + rx * 0.85, cy - ry * 0.72, fill=band)
