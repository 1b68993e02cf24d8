"""An embedding trained by lora.tokens, exported from its LoRA file as a standalone AUTOMATIC1111
embedding file, draws the same pixels as the embedding bundled in the LoRA."""

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_data import tiny_datasets

from configs import tiny_train_dict
from ldm.config import from_dict
from ldm.lora.embedding_files import EmbeddingFileError, read_embedding_file
from ldm.lora.embeddings import export_bundled_embeddings
from ldm.pipeline import Pipeline
from ldm.training.config import TrainConfig
from ldm.training.loop import train

FAST = {"seed": 2, "steps": 2, "cfg": 5.0, "sampler": "ddim", "progress": False}


@pytest.fixture
def backbone() -> str:
    return "unet"  # LoRAs adapt U-Nets


def test_the_exported_embedding_draws_what_the_bundled_one_draws(tmp_path, tiny_model_dir):
    data = tiny_train_dict("lora", tmp_path / "run", max_steps=3, lr=5e-2)
    data["lora"] = {"init_from": str(tiny_model_dir), "rank": 2, "tokens": ["red"], "dtype": "fp32"}
    lora = train(from_dict(TrainConfig, data), open_dataset=tiny_datasets()).export_path

    [exported] = export_bundled_embeddings(lora, tmp_path / "embeddings")
    assert exported.name == "red.safetensors" and read_embedding_file(exported).vectors == 1
    with safe_open(str(lora), framework="pt") as handle:
        metadata = handle.metadata()
    adapters = tmp_path / "adapters-only.safetensors"  # the same LoRA without its bundled embedding
    save_file({k: v for k, v in load_file(lora).items() if not k.startswith("bundle_emb.")}, str(adapters), metadata=metadata)

    pipe = Pipeline.load(tiny_model_dir)
    bundled = pipe.generate("red over blue", loras=((str(lora), 1.0),), **FAST)
    without = pipe.generate("red over blue", loras=((str(adapters), 1.0),), **FAST)
    pipe.embeddings_dir = str(tmp_path / "embeddings")
    standalone = pipe.generate("red over blue", loras=((str(adapters), 1.0),), **FAST)
    assert standalone.images[0].tobytes() == bundled.images[0].tobytes()
    assert standalone.images[0].tobytes() != without.images[0].tobytes()  # the embedding is what made the difference
    assert "TI hashes" in standalone.parameters[0].to_text()

    with pytest.raises(EmbeddingFileError, match="red.safetensors exists"):
        export_bundled_embeddings(lora, tmp_path / "embeddings")
    with pytest.raises(EmbeddingFileError, match="bundles no embeddings"):
        export_bundled_embeddings(adapters, tmp_path / "more")
