"""Drawing procedural anime-style characters with PIL.

`render(spec, variation, size)` is a pure function: the attribute values in `CharacterSpec` and the
look that is not an attribute in `Variation` (position jitter, line width, outfit colour,
background, ...) decide every pixel. Tests rely on that: change one attribute, keep the variation,
and only what that attribute draws changes.

Geometry is written for a 256-unit canvas and scaled; the picture is drawn at `SUPERSAMPLE` times
the output size and reduced, which is how PIL gets anti-aliased edges. Every attribute value has a
cue of its own (a colour, a shape, a length, a line), so each value is visibly distinct.

Modules: `palette` (colours, drawable values), `spec` (`CharacterSpec`, `Variation`), `pen`
(primitives), `geometry` (layout, background), then one module per part of the picture in the
order `render` paints them: `hair`, `body`, `face`, `accessories`.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from .accessories import draw_head_accessories, draw_neck_accessories
from .body import draw_body, draw_neck
from .face import draw_brows, draw_face
from .geometry import draw_background, layout
from .hair import Hair
from .palette import (ACCENT_RGB, BACKGROUND_RGB, COLORED_SKIN_RGB, CUES, DRAWABLE, EYE_RGB, HAIR_LENGTHS, HAIR_RGB,
                      HAIR_SHAPES, HAIR_TEXTURES, HAT_KINDS, OUTFIT_RGB, SKIN_RGB, SUPERSAMPLE, UNITS)
from .pen import Pen
from .spec import CharacterSpec, Variation, sample_variation

__all__ = ["ACCENT_RGB", "BACKGROUND_RGB", "COLORED_SKIN_RGB", "CUES", "DRAWABLE", "EYE_RGB", "HAIR_LENGTHS",
           "HAIR_RGB", "HAIR_SHAPES", "HAIR_TEXTURES", "HAT_KINDS", "OUTFIT_RGB", "SKIN_RGB", "CharacterSpec",
           "Variation", "render", "sample_variation"]


def render(spec: CharacterSpec, variation: Variation, size: int = 256) -> Image.Image:
    """The picture of `spec` with `variation`, `size` x `size` RGB."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), variation.background)
    pen = Pen(ImageDraw.Draw(image), big / UNITS)
    g = layout(spec, variation)
    draw_background(pen, variation)
    hair = Hair(pen, spec, variation, g)
    hair.back()
    draw_neck(pen, g)
    draw_body(pen, spec, variation, g)
    draw_neck_accessories(pen, spec, variation, g)
    hair.tails()
    draw_face(pen, spec, g)
    hair.front()
    draw_brows(pen, spec, g)
    draw_head_accessories(pen, spec, variation, g, hair)
    if variation.tilt:
        # Nearest is enough here: the reduction below anti-aliases (and bicubic costs 20x more).
        image = image.rotate(variation.tilt, resample=Image.Resampling.NEAREST, fillcolor=variation.background)
    return image.reduce(SUPERSAMPLE)
