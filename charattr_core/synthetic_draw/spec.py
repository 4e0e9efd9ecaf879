"""What one picture shows (`CharacterSpec`, the attributes) and how it looks otherwise (`Variation`)."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from .palette import ACCENT_RGB, BACKGROUND_RGB, DRAWABLE, HAIR_SHAPES, HAIR_TEXTURES, HAT_KINDS, RGB
from .pen import jitter


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
    style_pick: float  # sub-styles: mask and glasses colouring, double bun, twin braids
    side: int  # -1 or 1: where one-sided things go (side ponytail, braid, ribbon)
    detail_seed: int  # messy strands


def sample_variation(rng: random.Random) -> Variation:
    """Draw a variation; uses `rng` a fixed number of times whatever the character is."""
    return Variation(
        dx=rng.uniform(-7, 7), dy=rng.uniform(-5, 6), head_rx=rng.uniform(44, 50), line=rng.uniform(1.5, 2.5),
        eye_gap=rng.uniform(17.5, 21.5), tilt=rng.uniform(-4, 4) if rng.random() < 0.6 else 0.0,
        background=jitter(rng.choice(BACKGROUND_RGB), rng, 10),
        pattern=rng.choice(("plain", "plain", "dots", "stripes", "floor")),
        outfit_pick=rng.random(), accent=rng.choice(ACCENT_RGB), item=jitter(rng.choice(ACCENT_RGB[:5]), rng, 14),
        hat_kind=rng.choice(HAT_KINDS), style_pick=rng.random(), side=rng.choice((-1, 1)),
        detail_seed=rng.randrange(1 << 30),
    )


