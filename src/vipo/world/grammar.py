"""The embedded world's vocabulary: attributes, prompt grammar, parsing, and the fixed train/held-out split.

Everything here is pure and tiny. The split is listed explicitly (``HELDOUT``) so that one line of code decides what
the base model and IPO training may never see; evaluation always reports both sides separately.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

# Exact palette (RGB, 0-255). Order is part of the world's definition: it fixes attribute ids.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "white": (235, 235, 235),
    "magenta": (200, 60, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
# Unit motion per direction in image coordinates (x to the right, y downward).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: the way back: what a direction becomes when the clip runs backwards
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "up": "down", "down": "up"}

# Phrasings of a prompt. The first is the canonical one and must stay exactly this string.
TEMPLATES: tuple[str, ...] = (
    "a {color} {shape} moving {direction}",
    "a {color} {shape} that moves {direction}",
    "one {color} {shape} sliding {direction}",
    "a {shape} in {color} moving {direction}",
    "{color} {shape} drifting {direction} on black",
)


@dataclass(frozen=True, order=True)
class Attributes:
    color: str
    shape: str
    direction: str

    def prompt(self, template: int = 0) -> str:
        return TEMPLATES[template].format(color=self.color, shape=self.shape, direction=self.direction)

    @property
    def key(self) -> str:
        return f"{self.color}-{self.shape}-{self.direction}"


ALL: tuple[Attributes, ...] = tuple(Attributes(c, s, d) for c, s, d in itertools.product(COLORS, SHAPES, DIRECTIONS))

# The 12 held-out combinations: two per color, chosen so that every color, shape and direction still occurs in
# training (held-out prompts test composition, not unseen words). Never used for pretraining or IPO prompts.
HELDOUT: frozenset[Attributes] = frozenset(
    Attributes(*t)
    for t in [
        ("red", "triangle", "up"),
        ("red", "square", "left"),
        ("green", "circle", "down"),
        ("green", "triangle", "right"),
        ("blue", "square", "up"),
        ("blue", "circle", "left"),
        ("yellow", "triangle", "down"),
        ("yellow", "square", "right"),
        ("white", "circle", "up"),
        ("white", "triangle", "left"),
        ("magenta", "square", "down"),
        ("magenta", "circle", "right"),
    ]
)
INDIST: tuple[Attributes, ...] = tuple(a for a in ALL if a not in HELDOUT)
HELDOUT_LIST: tuple[Attributes, ...] = tuple(a for a in ALL if a in HELDOUT)


def split_of(attrs: Attributes) -> str:
    return "heldout" if attrs in HELDOUT else "indist"


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for field, options in (("color", COLORS), ("shape", SHAPES), ("direction", DIRECTIONS)):
        pattern = pattern.replace(re.escape("{" + field + "}"), f"(?P<{field}>{'|'.join(options)})")
    return re.compile(f"^{pattern}$")


_REGEXES = tuple(_template_regex(t) for t in TEMPLATES)


def parse(prompt: str) -> Attributes | None:
    """Attributes of a prompt written in any phrasing of the grammar (case and outer spaces ignored), else None."""
    text = " ".join(prompt.strip().lower().split())
    for rx in _REGEXES:
        m = rx.match(text)
        if m:
            return Attributes(m["color"], m["shape"], m["direction"])
    return None


def vocabulary() -> list[str]:
    """Every word the grammar can produce, sorted; the world tokenizer is built from it."""
    words: set[str] = set(COLORS) | set(SHAPES) | set(DIRECTIONS)
    for t in TEMPLATES:
        words |= {w for w in t.split() if not w.startswith("{")}
    return sorted(words)


def random_prompt(attrs: Attributes, rng: random.Random) -> str:
    return attrs.prompt(rng.randrange(len(TEMPLATES)))


def mislabel(attrs: Attributes, rng: random.Random, noise: float) -> Attributes:
    """The attributes a noisy captioner would write for a clip of ``attrs``.

    Each of colour, shape and direction is independently replaced, with probability ``noise``, by a uniformly drawn
    other value, the way web captions of real video are often wrong. The result is always an in-distribution
    combination (redrawn otherwise), so a noisy caption never names a held-out combination either.
    """
    if noise <= 0:
        return attrs
    options = (tuple(COLORS), SHAPES, DIRECTIONS)
    while True:
        values = [
            rng.choice([o for o in opts if o != v]) if rng.random() < noise else v
            for v, opts in zip((attrs.color, attrs.shape, attrs.direction), options)
        ]
        out = Attributes(*values)
        if out not in HELDOUT:
            return out
