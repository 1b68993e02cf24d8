"""The caption a sample trains with in an epoch: one of its captions, drawn, then its tags
rearranged as `data.captions` says (kohya's shuffle_caption / keep_tokens / caption_tag_dropout_rate
and a trigger word), then caption dropout.

A caption is a list of tags split by `tag_separator` ("1girl, red hair, smiling"). The first
`keep_tokens` tags stay first and are always kept; the others are shuffled and each dropped with
`tag_dropout`; the `trigger` is put before everything. Every draw comes from generators seeded
by (seed, epoch, sample key) (ldm.data.randomness): the same caption in every process, DataLoader
worker and resumed run, for images and cached latents alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ldm.data.captions import choose_caption, drop_caption
from ldm.data.config import CaptionSettings
from ldm.data.randomness import sample_generator, stable_index


def check_caption_settings(settings: CaptionSettings) -> None:
    """ValueError, naming the key, for a data.captions value no caption can use."""
    if settings.keep_tokens < 0:
        raise ValueError(f"data.captions.keep_tokens must not be negative, got {settings.keep_tokens}")
    if not 0.0 <= settings.tag_dropout <= 1.0:
        raise ValueError(f"data.captions.tag_dropout must be in [0, 1], got {settings.tag_dropout}")
    if settings.tag_separator == "":
        raise ValueError('data.captions.tag_separator is empty; tags are split by it (default ",")')
    if settings.trigger != settings.trigger.strip():
        raise ValueError(f"data.captions.trigger {settings.trigger!r} has spaces around it; write it without")
    if settings.trigger and settings.tag_separator in settings.trigger:
        raise ValueError(f"data.captions.trigger {settings.trigger!r} holds the tag separator {settings.tag_separator!r}: it must be one tag")


def rearranges_tags(settings: CaptionSettings) -> bool:
    """Whether a caption's tags change from epoch to epoch (so it is seldom the same string twice)."""
    return settings.shuffle_tags or settings.tag_dropout > 0


def transform_caption(caption: str, settings: CaptionSettings, generator: Optional[torch.Generator]) -> str:
    """`caption` with its tags shuffled and dropped (drawn with `generator`; None, for evaluation:
    tags as they are) and the trigger first. With nothing to do, `caption` unchanged."""
    if generator is not None and rearranges_tags(settings):
        caption = _rearranged(caption, settings, generator)
    return _with_trigger(caption, settings)


def _rearranged(caption: str, settings: CaptionSettings, generator: torch.Generator) -> str:
    tags = split_tags(caption, settings.tag_separator)
    if settings.trigger and tags[:1] == [settings.trigger]:
        tags = tags[1:]  # the trigger is put back first, whatever the shuffle does
    kept, rest = tags[: settings.keep_tokens], tags[settings.keep_tokens :]
    if settings.shuffle_tags:
        rest = [rest[i] for i in torch.randperm(len(rest), generator=generator).tolist()]
    if settings.tag_dropout > 0:
        draws = torch.rand(len(rest), generator=generator).tolist()
        rest = [tag for tag, draw in zip(rest, draws) if draw >= settings.tag_dropout]
    return tag_joiner(settings.tag_separator).join(kept + rest)


def _with_trigger(caption: str, settings: CaptionSettings) -> str:
    trigger = settings.trigger
    if not trigger or split_tags(caption, settings.tag_separator)[:1] == [trigger]:
        return caption
    return tag_joiner(settings.tag_separator).join([trigger, caption]) if caption else trigger


def split_tags(caption: str, separator: str) -> list[str]:
    """The non-empty tags of `caption`, without the spaces around them."""
    return [tag.strip() for tag in caption.split(separator) if tag.strip()]


def tag_joiner(separator: str) -> str:
    """"," -> ", ": tags are written back with one space after the separator."""
    return separator.rstrip() + " " if separator.strip() else separator


@dataclass(frozen=True)
class CaptionDraw:
    """draw(captions, epoch, key) -> the caption sample `key` trains with in `epoch`: one of
    `captions` (stream "caption"), its tags per `settings` (stream "tags"), then dropped to ""
    with `dropout`. training=False (validation): the first caption, tags in place, the trigger."""

    settings: CaptionSettings
    seed: int
    dropout: float = 0.0

    def __call__(self, captions: list[str], epoch: int, key: str, training: bool = True) -> str:
        if not training:
            return transform_caption(captions[0], self.settings, None)
        index = stable_index(key)
        generator = sample_generator(self.seed, epoch, index, "caption")
        caption = choose_caption(captions, generator)
        caption = transform_caption(caption, self.settings, sample_generator(self.seed, epoch, index, "tags"))
        return drop_caption(caption, self.dropout, generator)
