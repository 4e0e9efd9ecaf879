"""Colours, shapes and the drawable values: the data the drawing code and the tests share."""

from __future__ import annotations

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
    "japanese_traditional": ((202, 42, 62), (60, 80, 172), (240, 168, 190), (58, 140, 112)),
    "swimsuit": ((40, 110, 222), (232, 48, 92), (250, 250, 252), (32, 32, 42), (250, 198, 48)),
    "maid": ((34, 34, 44),),  # black dress; the apron and collar are white
    "military_uniform": ((34, 34, 44), (84, 96, 58), (36, 48, 88)),
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


