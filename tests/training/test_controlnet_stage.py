"""Stage `controlnet`: a ControlNet for a frozen text2img model folder that starts as the
base model exactly, trains only itself, resumes exactly, and exports a folder that
ldm-generate --controlnet loads."""

import pytest
import torch
from PIL import Image
from marked_pictures import MARKED, bucketed_sample, marked, marked_folder, marked_share
from tiny_data import TinyImages, tiny_datasets

from configs import tiny_train_dict
from seeded_draws import SeededDraws
from ldm.config import ConfigError, from_dict
from ldm.diffusion.conditioning import Conditioning
from ldm.training.config import TrainConfig
from ldm.training.loop import train


def controlnet_config(tmp_path, init_from, controlnet=None, validation=None, **train_settings):
    data = tiny_train_dict("controlnet", tmp_path / "run", **train_settings)
    data["controlnet"] = {"init_from": str(init_from), "control_type": "raw", **(controlnet or {})}
    if validation:
        data["validation"] = validation
    return from_dict(TrainConfig, data)


def test_at_step_zero_the_output_is_the_base_models_exactly(tmp_path, tiny_model_dir):
    from ldm.training.batches import Randomness
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    config = controlnet_config(tmp_path, tiny_model_dir, controlnet={"control_dropout": 0.0})
    stage = build_stage(StageContext(config, torch.device("cpu"), tmp_path, tiny_datasets()))
    module = stage.module
    batch = {key: [TinyImages()[i][key] for i in range(2)] for key in ("pixels", "caption", "key")}
    batch["pixels"] = torch.stack(batch["pixels"])
    g = torch.Generator().manual_seed(0)
    latents, context = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 32, generator=g)
    timesteps = torch.tensor([5, 800])
    with torch.no_grad():
        controlled = module.predict(latents, timesteps, Conditioning(context), batch, Randomness(0, 0, 0))
        base = module.denoiser(latents, timesteps, encoder_hidden_states=context).sample
        control = stage.control_images(batch, (32, 32))
    assert control.abs().sum() > 0  # a real control image went in
    assert torch.equal(controlled, base)
    assert all(not p.requires_grad for p in module.denoiser.parameters())
    assert {name.split(".")[0] for name, p in module.named_parameters() if p.requires_grad} == {"controlnet"}


def test_training_exports_a_controlnet_that_generation_loads(tmp_path, tiny_model_dir):
    from ldm.control.model import control_type_of
    from ldm.control.units import ControlUnit
    from ldm.formats.model_folder import read_safetensors
    from ldm.pipeline import Pipeline

    validation = {"prompts": ["red over blue"], "steps": 2}
    result = train(controlnet_config(tmp_path, tiny_model_dir, validation=validation, max_steps=3), open_dataset=tiny_datasets())
    assert result.export_path == tmp_path / "run" / "controlnet" / "raw"
    assert control_type_of(result.export_path) == "raw"
    assert (tmp_path / "run" / "samples" / "step-000003.png").is_file()
    assert Image.open(tmp_path / "run" / "samples" / "step-000003.png").size == (4 * 32, 32)
    # The base U-Net is untouched: the model folder's weights are what the stage started from.
    trained_unet = read_safetensors(tiny_model_dir / "denoiser.safetensors")
    pipe = Pipeline.load(tiny_model_dir, controlnets=(result.export_path,))
    assert all(torch.equal(pipe.components.denoiser.state_dict()[k], v) for k, v in trained_unet.items())
    unit = ControlUnit(Image.new("RGB", (32, 32), "white"), "raw", 2.0)
    steered = pipe.generate("red", controls=(unit,), steps=2, seed=1, progress=False)
    plain = pipe.generate("red", steps=2, seed=1, progress=False)
    assert steered.parameters[0].fields()["ControlNet 0"].startswith("Module: none, Model: raw, Weight: 2,")
    assert steered.images[0].tobytes() != plain.images[0].tobytes()  # three steps moved the zero convolutions


def test_resume_continues_as_if_never_stopped(tmp_path, tiny_model_dir):
    from ldm.training.checkpoints import resolve_checkpoint

    settings = dict(controlnet={"control_type": "canny"}, ema_decay=0.9)
    straight = train(controlnet_config(tmp_path / "a", tiny_model_dir, max_steps=4, **settings), open_dataset=tiny_datasets())
    train(controlnet_config(tmp_path / "b", tiny_model_dir, max_steps=2, **settings), open_dataset=tiny_datasets())
    resumed = train(
        controlnet_config(tmp_path / "b", tiny_model_dir, max_steps=4, **settings),
        resume=resolve_checkpoint("latest", tmp_path / "b" / "run"),
        open_dataset=tiny_datasets(),
    )
    assert resumed.losses == straight.losses[2:]
    from ldm.formats.model_folder import read_safetensors

    a = read_safetensors(straight.export_path / "diffusion_pytorch_model.safetensors")
    b = read_safetensors(resumed.export_path / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_control_maps_from_a_folder_by_key(tmp_path, tiny_model_dir):
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 0, 255)).save(maps / f"{i:05d}.png")  # keys 00000..; resized to 32
    config = controlnet_config(tmp_path, tiny_model_dir, controlnet={"control_dir": str(maps)}, max_steps=2)
    assert train(config, open_dataset=tiny_datasets()).step == 2
    (maps / "00003.png").unlink()
    config = controlnet_config(tmp_path / "again", tiny_model_dir, controlnet={"control_dir": str(maps)}, max_steps=4)
    with pytest.raises(ValueError, match="controlnet.control_dir: control map file not found"):
        train(config, open_dataset=tiny_datasets())


def test_stored_maps_are_read_as_control_images_cropped_like_their_images(tmp_path):
    """A stored canny map is the control image (Canny again would draw both flanks of each
    edge), and a map of a non-square picture is centre-cropped as the picture is."""
    from ldm.training.controlnet_stage import ControlImages

    maps = tmp_path / "maps"
    maps.mkdir()
    edges = Image.new("RGB", (48, 32))
    edges.paste((255, 255, 255), (20, 0, 21, 32))  # one vertical edge, 1 px wide, at x = 20
    edges.save(maps / "a.png")
    control = ControlImages("canny", maps, resolution=32)({"key": ["a"]}, (32, 32))  # (1, 3, 32, 32)
    # The 48x32 map, cropped to its middle 32 columns (8..39) as the data's centre crop does.
    assert control.shape == (1, 3, 32, 32)
    assert torch.equal(control[0, 0], torch.nn.functional.one_hot(torch.full((32,), 12), 32).float())


@pytest.mark.parametrize("size", list(MARKED))
def test_a_bucketed_pictures_map_from_a_folder_is_cropped_as_the_picture(tmp_path, size):
    """A wide and a tall picture in their buckets: the map's marked pixels are the picture's,
    from a map of the picture's size and from one of twice its size."""
    from ldm.training.controlnet_stage import ControlImages

    batch = bucketed_sample(marked_folder(tmp_path / "images", size))
    height, width = batch["pixels"].shape[-2:]
    expected = marked_share(batch["pixels"][0])
    for scale in (1, 2):
        maps = tmp_path / f"maps-{scale}"
        maps.mkdir()
        marked(size, MARKED[size], scale=scale).save(maps / "00000.png")
        control = ControlImages("raw", maps, resolution=32)(batch, (width, height))  # (1, 3, H, W) in [0, 1]
        assert control.shape == (1, 3, height, width)
        if scale == 1:
            assert torch.allclose(control[0, 0], expected, atol=0.5 / 255)  # through an 8-bit picture
        assert torch.equal(control[0, 0] > 0.5, expected > 0.5)


def test_maps_carried_by_the_data_are_the_control_images(tmp_path):
    """data.control_column / control_key put each sample's map in the batch, already cropped:
    it is used as it is, not the preprocessor's view of the pixels."""
    from ldm.training.controlnet_stage import ControlImages

    control = torch.rand(2, 3, 32, 32) * 2 - 1
    batch = {"pixels": torch.zeros(2, 3, 32, 32), "control": control, "key": ["a", "b"]}
    read = ControlImages("canny", None, resolution=32)(batch, (32, 32))
    assert torch.allclose(read, (control + 1) / 2, atol=1 / 255)  # through 8-bit pictures


def test_training_on_an_hf_dataset_with_a_control_column(tmp_path, tiny_model_dir, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    pictures = [Image.new("RGB", (40, 40), (40 * n, 100, 200)) for n in range(6)]
    maps = [Image.new("RGB", (40, 40), (255 * (n % 2),) * 3) for n in range(6)]
    features = datasets.Features({"image": datasets.Image(), "map": datasets.Image(), "text": datasets.Value("string")})
    rows = {"image": pictures, "map": maps, "text": [f"square {n}" for n in range(6)]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    config = controlnet_config(tmp_path, tiny_model_dir, max_steps=2, batch_size=2)
    config.data.source, config.data.path, config.data.control_column = "hf", str(tmp_path / "saved"), "map"
    from ldm.training.controlnet_stage import ControlImages

    read, original = [], ControlImages.pictures
    monkeypatch.setattr(ControlImages, "pictures", lambda self, batch, size: (read.append(batch["control"]), original(self, batch, size))[1])
    assert train(config).step == 2
    assert len(read) == 2 and all(len(control) == 2 for control in read)  # each step's maps, from the column


def test_the_preprocessors_maps_are_cached_with_the_latents(tmp_path, tiny_model_dir, monkeypatch):
    """With text2img.latent_cache, Canny runs once per picture (when the cache is built),
    not at every step, and training reads the same maps: the losses are the uncached run's."""
    from ldm.training.controlnet_stage import ControlImages

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for n in range(6):
        picture = Image.new("RGB", (32, 32), (20, 40, 200))
        picture.paste((250, 250, 250), (4 + 2 * n, 6, 20 + n, 26))  # a box: edges for Canny
        picture.save(pictures / f"{n}.png")
        (pictures / f"{n}.txt").write_text(f"box {n}")
    read, original = [], ControlImages.pictures
    monkeypatch.setattr(ControlImages, "pictures", lambda self, batch, size: (read.append(len(batch["key"])), original(self, batch, size))[1])

    def run(name, cache):
        config = controlnet_config(tmp_path / name, tiny_model_dir, controlnet={"control_type": "canny"}, max_steps=4, batch_size=2)
        config.data.path, config.text2img.latent_cache = str(pictures), cache
        read.clear()
        return train(config)

    plain = run("plain", False)
    assert sum(read) == 4 * 2  # every step's pictures through Canny
    cached = run("cached", True)
    assert sum(read) == 6  # each picture once, when the cache was built
    assert cached.losses == pytest.approx(plain.losses, rel=1e-4)
    from ldm.formats.model_folder import read_safetensors

    shard = next((tmp_path / "cached" / "run" / "latent_cache").glob("*/shard-*.safetensors"))
    maps = read_safetensors(shard)["control_map"]
    assert maps.dtype == torch.uint8 and maps.shape == (6, 3, 32, 32) and set(maps.unique().tolist()) == {0, 255}
    again = run("cached", True)  # the same cache: nothing to compute
    assert sum(read) == 0 and again.step == 4


def test_data_maps_belong_to_the_controlnet_stage(tmp_path):
    data = tiny_train_dict("text2img", tmp_path / "run")
    data["data"]["control_column"] = "map"
    with pytest.raises(ConfigError, match="data.control_column and data.control_key are for stage controlnet"):
        from_dict(TrainConfig, data)


def test_stored_maps_need_the_data_cropped_in_the_middle(tmp_path):
    with pytest.raises(ConfigError, match="controlnet.control_dir needs data.crop: center and data.random_flip: false"):
        data = tiny_train_dict("controlnet", tmp_path / "run")
        data["controlnet"] = {"init_from": "model", "control_type": "canny", "control_dir": str(tmp_path)}
        data["data"]["random_flip"] = True
        from_dict(TrainConfig, data)


def test_cubic_timesteps_sit_mostly_at_high_noise(tmp_path, tiny_model_dir):
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    def timesteps(kind):
        config = controlnet_config(tmp_path / kind, tiny_model_dir, controlnet={"timesteps": kind})
        stage = build_stage(StageContext(config, torch.device("cpu"), tmp_path / kind, tiny_datasets()))
        return stage.module.sample_timesteps(20000, SeededDraws()).float()

    uniform, cubic = timesteps("uniform"), timesteps("cubic")
    assert uniform.mean() == pytest.approx(500, abs=10) and cubic.mean() == pytest.approx(750, abs=10)  # E[1 - u^3] = 3/4
    assert cubic.min() >= 0 and cubic.max() <= 999 and (cubic >= 500).float().mean() == pytest.approx(0.5 ** (1 / 3), abs=0.01)  # u^3 <= 1/2


@pytest.mark.parametrize(("section", "message"), [
    ({"init_from": None}, "controlnet.init_from is required"),
    ({"control_type": "depth"}, "controlnet.control_type is 'depth'; expected one of canny, layout, raw"),
    ({"control_dropout": 1.5}, r"controlnet.control_dropout must be in \[0, 1\], got 1.5"),
    ({"timesteps": "cosine"}, "controlnet.timesteps is 'cosine'; expected one of uniform, cubic"),
])  # fmt: skip
def test_bad_controlnet_sections_are_config_errors(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        controlnet_config(tmp_path, "model", controlnet=section)


@pytest.fixture
def backbone() -> str:
    """ControlNets, LoRAs in SD's key layout and SD's single files are U-Net things."""
    return "unet"


@pytest.fixture
def tiny_model_dir(shared_tiny_model_dir):
    """Only read here (the ControlNets start from its U-Net): one folder per session."""
    return shared_tiny_model_dir
