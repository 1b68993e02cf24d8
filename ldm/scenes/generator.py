"""Procedural landscape scenes with matching captions: license-clean text-to-image data.

A scene is a few attributes (time of day, setting, optional mountains, trees, sun or
moon, clouds, house). `sample_attributes` draws them, `ldm.scenes.draw.draw_scene` paints them
and `caption` describes them in varied words. Everything is a pure function of a seed,
so any example can be regenerated alone:

    image, attrs = make_scene(scene_seed(seed, i), size, split)
    text = scene_caption(scene_seed(seed, i), attrs)

Some (setting, time of day) pairs are kept out of the "train" split, so a model's
ability to combine concepts it has only seen apart can be tested on the "heldout" split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from ldm.scenes.draw import draw_scene

TIMES_OF_DAY = ("dawn", "noon", "dusk", "night")
SETTINGS = ("lake", "meadow", "desert", "snowfield")
POSITIONS = ("left", "center", "right")
SPLITS = ("train", "heldout", "all")
MAX_TREES = 3
HELD_OUT = frozenset({("desert", "night"), ("snowfield", "dawn"), ("lake", "dusk")})

# Caption vocabulary. Every phrase names its attribute recognisably.
TIME_WORDS = {
    "dawn": ("dawn", "sunrise", "daybreak"),
    "noon": ("noon", "midday"),
    "dusk": ("dusk", "sunset"),
    "night": ("night", "nighttime"),
}
SETTING_WORDS = {
    "lake": ("a lake", "a calm lake", "a pond"),
    "meadow": ("a meadow", "a grassy meadow", "a green field"),
    "desert": ("a desert", "a sandy desert", "the desert dunes"),
    "snowfield": ("a snowfield", "a snowy field", "a snow-covered plain"),
}
SETTING_PREPOSITION = {"lake": "by", "meadow": "in", "desert": "in", "snowfield": "on"}
TREE_COUNT_WORDS = {1: ("a", "one", "a single"), 2: ("two",), 3: ("three",)}
MOUNTAIN_WORDS = ("mountains", "distant mountains", "snowy mountains", "snow-capped mountains")
CONCEPTS = ("windmill",)
WINDMILL_WORDS = ("a windmill", "an old windmill", "a white windmill")
HOUSE_WORDS = ("a small house", "a little house", "a cabin", "a cottage")
CLOUD_WORDS = ("clouds", "a few clouds", "drifting clouds")
SUN_WORDS = {
    "dawn": ("the rising sun", "the morning sun"),
    "noon": ("the noon sun", "the midday sun", "the bright sun"),
    "dusk": ("the setting sun", "the evening sun"),
}
MOON_WORDS = ("the moon", "a crescent moon")
POSITION_WORDS = {
    "left": ("on the left",),
    "center": ("in the center", "in the middle"),
    "right": ("on the right",),
}

# "{extras}" becomes " with <all present features>" or nothing; "{sky}" the same for just
# clouds and sun/moon. Templates with "{things}" put what stands on the ground up front
# ("a house by a lake"), so they are only used when there is some.
TEMPLATES = (
    "{place} at {time}{extras}",
    "{time} over {place}{extras}",
    "a view of {place} at {time}{extras}",
    "{place} under a {time} sky{extras}",
    "a simple picture of {place} at {time}{extras}",
    "{things} {prep} {place} at {time}{sky}",
    "{things} {prep} {place}, {time}{sky}",
)


@dataclass(frozen=True)
class SceneAttributes:
    """What a scene shows; the caption mentions every one of these that is present."""

    time_of_day: str
    setting: str
    mountains: bool = False
    trees: int = 0  # never in the desert: nothing to caption as "trees" grows there
    celestial: str | None = None  # "sun" at dawn/noon/dusk, "moon" at night
    celestial_position: str | None = None  # "left", "center" or "right" when celestial is set
    clouds: bool = False
    house: bool = False
    # A concept the built-in model never saw (CONCEPTS): only scenes made for it have one.
    windmill: bool = False

    def __post_init__(self) -> None:
        if self.time_of_day not in TIMES_OF_DAY:
            raise ValueError(f"time_of_day must be one of {TIMES_OF_DAY}, got {self.time_of_day!r}")
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if not 0 <= self.trees <= MAX_TREES or (self.setting == "desert" and self.trees):
            raise ValueError(f"trees must be 0..{MAX_TREES} (0 in the desert), got {self.trees}")
        if self.celestial not in (None, _celestial_for(self.time_of_day)):
            expected = _celestial_for(self.time_of_day)
            raise ValueError(f"celestial at {self.time_of_day} must be {expected!r} or None: {self.celestial!r}")
        if (self.celestial is None) != (self.celestial_position is None) or (
            self.celestial_position not in (None, *POSITIONS)
        ):
            raise ValueError("celestial_position must be one of left/center/right exactly when celestial is set")

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        for concept in CONCEPTS:  # absent unless present: records of ordinary scenes stay as they were
            if not record[concept]:
                del record[concept]
        return record


def _celestial_for(time_of_day: str) -> str:
    return "moon" if time_of_day == "night" else "sun"


def split_pairs(split: str) -> list[tuple[str, str]]:
    """The (setting, time_of_day) pairs a split may use, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pairs = [(setting, time) for setting in SETTINGS for time in TIMES_OF_DAY]
    if split == "train":
        return [pair for pair in pairs if pair not in HELD_OUT]
    if split == "heldout":
        return [pair for pair in pairs if pair in HELD_OUT]
    return pairs


def sample_attributes(rng: random.Random, split: str = "train") -> SceneAttributes:
    setting, time_of_day = rng.choice(split_pairs(split))
    has_celestial = rng.random() < 0.75
    return SceneAttributes(
        time_of_day=time_of_day,
        setting=setting,
        mountains=rng.random() < 0.5,
        trees=0 if setting == "desert" else rng.randint(0, MAX_TREES),
        celestial=_celestial_for(time_of_day) if has_celestial else None,
        celestial_position=rng.choice(POSITIONS) if has_celestial else None,
        clouds=rng.random() < 0.4,
        house=rng.random() < 0.35,
    )


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _tree_phrase(attrs: SceneAttributes, rng: random.Random) -> str:
    count = rng.choice(TREE_COUNT_WORDS[attrs.trees])
    kind = rng.choice(("", "pine ")) if attrs.setting == "snowfield" else ""
    return f"{count} {kind}{'tree' if attrs.trees == 1 else 'trees'}"


def caption(attrs: SceneAttributes, rng: random.Random) -> str:
    """Describe `attrs` in words: always the time of day and setting, plus every present feature."""
    things = []  # what stands on the ground
    if attrs.trees:
        things.append(_tree_phrase(attrs, rng))
    if attrs.house:
        things.append(rng.choice(HOUSE_WORDS))
    if attrs.mountains:
        things.append(rng.choice(MOUNTAIN_WORDS))
    if attrs.windmill:  # after the others: captions of scenes without one keep their words
        things.append(rng.choice(WINDMILL_WORDS))
    rng.shuffle(things)
    in_sky = [rng.choice(CLOUD_WORDS)] if attrs.clouds else []
    if attrs.celestial:
        words = MOON_WORDS if attrs.celestial == "moon" else SUN_WORDS[attrs.time_of_day]
        in_sky.append(f"{rng.choice(words)} {rng.choice(POSITION_WORDS[attrs.celestial_position])}")

    template = rng.choice(TEMPLATES)
    if "{things}" in template and not things:
        template = TEMPLATES[0]
    everything = things + in_sky
    return template.format(
        place=rng.choice(SETTING_WORDS[attrs.setting]),
        time=rng.choice(TIME_WORDS[attrs.time_of_day]),
        prep=SETTING_PREPOSITION[attrs.setting],
        things=_join(things) if things else "",
        sky=f" with {_join(in_sky)}" if in_sky else "",
        extras=f" with {_join(everything)}" if everything else "",
    )


def scene_seed(seed: int, index: int) -> int:
    """Seed of example `index` in a dataset made with `seed`; stable across runs and machines."""
    digest = hashlib.sha256(f"scenes:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def make_scene(seed: int, size: int = 128, split: str = "all", concept: str | None = None) -> tuple[Image.Image, SceneAttributes]:
    """Sample attributes for `seed` from `split` and draw them as a `size` x `size` RGB image;
    `concept` (one of CONCEPTS) adds that object to the scene."""
    attrs = scene_attributes(seed, split, concept)
    return draw_scene(attrs, seed, size), attrs


def scene_attributes(seed: int, split: str = "all", concept: str | None = None) -> SceneAttributes:
    """The attributes make_scene(seed, ..., split, concept) draws."""
    attrs = sample_attributes(random.Random(f"{seed}:attributes"), split)
    if concept is None:
        return attrs
    if concept not in CONCEPTS:
        raise ValueError(f"concept must be one of {CONCEPTS}, got {concept!r}")
    return dataclasses.replace(attrs, **{concept: True})


def scene_caption(seed: int, attrs: SceneAttributes) -> str:
    """The caption that goes with `make_scene(seed, ...)`; its own rng stream, so wording is
    independent of the attribute draws."""
    return caption(attrs, random.Random(f"{seed}:caption"))


def shows_concept(seed: int, index: int, share: float) -> bool:
    """Whether example `index` of a dataset made with `seed` shows the concept, when `share` of
    them do: its own random stream, so the other examples are drawn as without it."""
    return share >= 1.0 or random.Random(f"{seed}:{index}:concept").random() < share


def iter_scenes(
    n: int, seed: int = 0, size: int = 128, split: str = "train", start: int = 0, concept: str | None = None
) -> Iterator[tuple[str, Image.Image, str, SceneAttributes]]:
    """Yield (key, image, caption, attrs) for examples start .. start+n-1; key is the zero-padded index."""
    for index in range(start, start + n):
        example_seed = scene_seed(seed, index)
        image, attrs = make_scene(example_seed, size, split, concept)
        yield f"{index:08d}", image, scene_caption(example_seed, attrs), attrs
