"""text2img.text_embedding_memory_mb: a frozen text encoder's embeddings remembered by
caption. Same embeddings as encoding every step, no text-tower call for a caption seen
before, least recently used forgotten first, and training with it matches training without."""

from pathlib import Path

import pytest
import torch

from configs import tiny_train_config
from tiny import build_tiny
from tiny_data import tiny_image_folder

from ldm.config import ConfigError
from ldm.models.text_conditioner import TextConditioner
from ldm.training import text2img_stage
from ldm.training.config import validate_train
from ldm.training.loop import train
from ldm.training.text_embeddings import TextEmbeddingMemory


class CountingEncoder(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.calls = encoder, 0

    def tokenize(self, captions):
        return self.encoder.tokenize(captions)

    def forward(self, tokens):
        self.calls += 1
        return self.encoder(tokens)


@pytest.fixture
def encoder():
    return CountingEncoder(build_tiny().first_text_encoder.eval())


def test_remembered_embeddings_equal_the_encoders_and_cost_no_second_call(encoder):
    captions = ["a lake at dawn", "", "a desert at night", "a lake at dawn"]
    memory = TextEmbeddingMemory(TextConditioner([encoder]), 2**30)
    first = memory(captions, torch.device("cpu"))
    with torch.no_grad():
        direct = encoder(encoder.tokenize(captions))
    assert first.tokens.shape == direct.hidden.shape and first.pooled.shape == direct.pooled.shape
    assert torch.allclose(first.tokens, direct.hidden, atol=1e-5)
    assert torch.allclose(first.pooled, direct.pooled, atol=1e-5)  # the pooled output is remembered too
    calls = encoder.calls
    assert calls == 1 + 3  # the batch above, then one call per distinct caption
    again = memory(list(reversed(captions)), torch.device("cpu"))
    assert encoder.calls == calls
    assert torch.equal(again.tokens, first.tokens.flip(0)) and torch.equal(again.pooled, first.pooled.flip(0))
    assert (memory.hits, memory.misses) == (5, 3)


def test_least_recently_used_captions_are_forgotten_first(encoder):
    one = TextEmbeddingMemory(TextConditioner([encoder]), 2**30)
    one(["a"], torch.device("cpu"))
    size = one.bytes
    assert size == (77 * 32 + 16) * 4  # tokens (1, 77, 32) and pooled (1, 16), float32
    memory = TextEmbeddingMemory(TextConditioner([encoder]), 2 * size)
    for caption in ["a", "b", "a", "c"]:  # "b" is the least recently used when "c" arrives
        memory([caption], torch.device("cpu"))
    assert list(memory.embeddings) == ["a", "c"]
    assert memory.bytes == 2 * size


def test_training_with_the_memory_matches_training_without_it(tmp_path, monkeypatch):
    made = []

    class Recorded(TextEmbeddingMemory):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(text2img_stage, "TextEmbeddingMemory", Recorded)
    images = tiny_image_folder(Path(tmp_path / "images"), 4)

    def run(name, memory_mb):
        config = tiny_train_config("text2img", str(tmp_path / name), max_steps=4, save_every=100)
        config.data.path = str(images)
        config.data.caption_dropout = 0.5  # the empty caption is remembered too
        config.text2img.text_embedding_memory_mb = memory_mb
        return train(config).losses

    assert run("remembered", 16) == pytest.approx(run("encoded", 0), abs=1e-6)
    assert len(made) == 1 and made[0].hits > 0  # the remembered run did skip the text tower


def test_a_negative_memory_size_is_refused(tmp_path):
    config = tiny_train_config("text2img", str(tmp_path / "run"))
    config.text2img.text_embedding_memory_mb = -1
    with pytest.raises(ConfigError, match="text2img.text_embedding_memory_mb"):
        validate_train(config)
