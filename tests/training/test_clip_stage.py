import torch

from configs import tiny_train_config
from tiny_data import tiny_datasets

from ldm.formats.model_folder import load_component
from ldm.training.loop import train


def test_few_steps_export_a_text_encoder_that_text2img_uses(tmp_path):
    config = tiny_train_config("clip", tmp_path / "clip-run", max_steps=2)
    result = train(config, open_dataset=tiny_datasets())
    encoder, text_config = load_component(result.export_path, "text_encoder")
    assert text_config.width == 32
    out = encoder(encoder.tokenize(["red over blue"])).hidden
    assert out.shape == (1, 77, 32)
    # text2img built on it conditions on exactly this tower.
    config = tiny_train_config("text2img", tmp_path / "t2i-run", max_steps=1)
    config.text2img.text_encoder_from = str(result.export_path)
    model = train(config, open_dataset=tiny_datasets()).export_path
    from ldm.formats.model_folder import load_model

    loaded = load_model(model)
    tokens = encoder.tokenize(["green over red"])
    assert torch.allclose(loaded.first_text_encoder(tokens).hidden, encoder(tokens).hidden, atol=1e-6)


def test_contrastive_loss_falls_on_a_fixed_batch(tmp_path):
    # Four images with four different captions: the model learns to match them.
    config = tiny_train_config("clip", tmp_path / "run", max_steps=30, batch_size=4, lr=2e-3, save_every=1000, weight_decay=0.0)
    result = train(config, open_dataset=tiny_datasets(n=4))
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first / 3, (first, last)
