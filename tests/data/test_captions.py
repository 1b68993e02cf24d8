import math

import pytest

from ldm.data import build_dataset
from ldm.data.captions import choose_caption, drop_caption
from ldm.data.randomness import sample_generator

from .fixtures import folder_config

DRAWS = 2000


@pytest.mark.parametrize("probability", [0.1, 0.5])
def test_dropout_rate_is_within_three_sigma_of_p(probability):
    dropped = sum(drop_caption("a cat", probability, sample_generator(0, 0, index, "caption")) == "" for index in range(DRAWS))
    sigma = math.sqrt(DRAWS * probability * (1 - probability))
    assert abs(dropped - DRAWS * probability) < 3 * sigma


def test_zero_dropout_never_drops_and_one_always_does():
    generators = [sample_generator(3, 1, index, "caption") for index in range(DRAWS)]
    assert all(drop_caption("a cat", 0.0, g) == "a cat" for g in generators)
    assert all(drop_caption("a cat", 1.0, g) == "" for g in generators)


def test_dataset_drops_captions_at_about_the_configured_rate(sidecar_folder):
    dataset = build_dataset(folder_config(sidecar_folder, caption_dropout=0.5), seed=1)
    captions = []
    for epoch in range(20):
        captions += [dataset[(epoch, position)]["caption"] for position in range(len(dataset))]
    draws = len(captions)  # 12 images x 20 epochs: each sample draws anew every epoch
    assert abs(captions.count("") - draws / 2) < 3 * math.sqrt(draws / 4)


def test_choose_caption_draws_every_caption_or_takes_the_first():
    captions = ["a", "b", "c"]
    drawn = {choose_caption(captions, sample_generator(0, epoch, 7, "caption")) for epoch in range(30)}
    assert drawn == {"a", "b", "c"}
    assert choose_caption(captions, None) == "a"
