"""data.captions: kohya's tag shuffling with keep_tokens, per-tag dropout and a trigger word,
drawn per (seed, epoch, sample key); bad values are one-line errors (tests/training/test_caption_config.py)."""

import math

import pytest

from ldm.data.caption_transforms import CaptionDraw, split_tags, transform_caption
from ldm.data.config import CaptionSettings
from ldm.data.randomness import sample_generator

TAGS = ["portrait", "1girl", "red hair", "smiling", "outdoors", "blue sky", "hat", "night"]
CAPTION = ", ".join(TAGS)
DRAWS = 400


def draws(settings: CaptionSettings, caption: str = CAPTION) -> list[list[str]]:
    """The tags of `caption` as `settings` rearranges it in DRAWS epochs."""
    return [split_tags(transform_caption(caption, settings, sample_generator(0, epoch, 3, "tags")), ",") for epoch in range(DRAWS)]


def test_shuffling_keeps_the_first_keep_tokens_and_permutes_the_rest():
    results = draws(CaptionSettings(shuffle_tags=True, keep_tokens=2))
    assert all(tags[:2] == TAGS[:2] and sorted(tags[2:]) == sorted(TAGS[2:]) for tags in results)
    orders = {tuple(tags[2:]) for tags in results}
    assert len(orders) > 270  # 400 uniform draws of 720 orders give 720 (1 - e^(-400/720)) = 307 distinct
    first = [tags[2] for tags in results]  # every free tag comes first about equally often
    assert all(abs(first.count(tag) - DRAWS / 6) < 4 * math.sqrt(DRAWS / 6) for tag in TAGS[2:])


@pytest.mark.parametrize("probability", [0.2, 0.5])
def test_tag_dropout_drops_each_free_tag_at_about_p_and_never_a_kept_one(probability):
    results = draws(CaptionSettings(keep_tokens=1, tag_dropout=probability))
    assert all(tags[0] == TAGS[0] for tags in results)
    assert all(tags[1:] == [t for t in TAGS[1:] if t in tags] for tags in results)  # order kept without shuffle_tags
    free = DRAWS * (len(TAGS) - 1)
    dropped = free - sum(len(tags) - 1 for tags in results)
    assert abs(dropped - free * probability) < 3 * math.sqrt(free * probability * (1 - probability))


def test_the_trigger_is_always_first_and_never_doubled():
    settings = CaptionSettings(trigger="sks", shuffle_tags=True, tag_dropout=0.5)
    assert all(tags[0] == "sks" and tags.count("sks") == 1 for tags in draws(settings))
    assert all(tags[0] == "sks" and tags.count("sks") == 1 for tags in draws(settings, "sks, " + CAPTION))
    everything_dropped = CaptionSettings(trigger="sks", tag_dropout=1.0)
    assert transform_caption(CAPTION, everything_dropped, sample_generator(0, 0, 0, "tags")) == "sks"
    kept = CaptionSettings(trigger="sks", keep_tokens=2, tag_dropout=1.0)  # keep_tokens counts after the trigger
    assert transform_caption(CAPTION, kept, sample_generator(0, 0, 0, "tags")) == "sks, portrait, 1girl"
    assert transform_caption("a cat", CaptionSettings(trigger="sks"), None) == "sks, a cat"
    assert transform_caption("", CaptionSettings(trigger="sks"), None) == "sks"


def test_without_settings_or_a_generator_the_tags_stay_as_written():
    messy = "a photo,of  a cat,, on a mat "
    assert transform_caption(messy, CaptionSettings(), sample_generator(0, 0, 0, "tags")) == messy
    assert transform_caption(messy, CaptionSettings(keep_tokens=1), sample_generator(0, 0, 0, "tags")) == messy
    shuffled = CaptionSettings(shuffle_tags=True, tag_dropout=0.5, trigger="sks")
    assert transform_caption(messy, shuffled, None) == "sks, " + messy  # validation: tags in place, the trigger first


def test_another_separator_splits_and_joins_the_tags():
    settings = CaptionSettings(shuffle_tags=True, keep_tokens=1, tag_separator="|", trigger="sks")
    caption = transform_caption("a|b|c|d", settings, sample_generator(0, 0, 0, "tags"))
    parts = caption.split("| ")
    assert parts[:2] == ["sks", "a"] and sorted(parts[2:]) == ["b", "c", "d"]


def test_the_draw_is_a_function_of_seed_epoch_and_key():
    draw = CaptionDraw(CaptionSettings(shuffle_tags=True, tag_dropout=0.3), seed=7)
    captions = [CAPTION, "a cat, a mat, a hat"]
    assert [draw(captions, epoch, "cat.jpg") for epoch in range(20)] == [draw(captions, epoch, "cat.jpg") for epoch in range(20)]
    assert len({draw(captions, epoch, "cat.jpg") for epoch in range(20)}) >= 15  # a new caption most epochs
    assert draw(captions, 0, "cat.jpg") != CaptionDraw(draw.settings, seed=8)(captions, 0, "cat.jpg")
    assert draw(captions, 3, "cat.jpg", training=False) == CAPTION  # validation: the first, as written


def test_the_caption_choice_does_not_shift_when_tag_settings_change():
    """Which caption is drawn comes from its own stream: switching tag shuffling on keeps it."""
    captions = ["one, a", "two, b", "three, c"]
    plain, shuffled = CaptionDraw(CaptionSettings(), 1), CaptionDraw(CaptionSettings(shuffle_tags=True, keep_tokens=1), 1)
    for epoch in range(10):
        assert plain(captions, epoch, "k").split(",")[0] == shuffled(captions, epoch, "k").split(",")[0]
