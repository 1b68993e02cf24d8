"""Built-in models: the demo model is shipped, loads, generates and is the default; models
resolve by name, a path always wins; --list-models."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ldm.diffusion.schedule import is_flow
from ldm.builtin_models import BUILTIN_MODELS, DEFAULT_MODEL, UnknownModelError, resolve_model
from ldm.formats.model_folder import ModelError
from ldm.pipeline import Pipeline

REPO = Path(__file__).parents[1]


def default_model_path():
    return resolve_model(None)


@pytest.fixture(scope="module")
def demo():
    path = default_model_path()
    assert (path / "model.yaml").is_file(), "ldm/weights/scenes is missing: the package must ship its demo model"
    return Pipeline.load()  # no path: the built-in model


def test_shipped_weights_are_small_fp16_safetensors():
    path = default_model_path()
    files = sorted(p.name for p in path.glob("*.safetensors"))
    assert files == ["text_encoder.safetensors", "unet.safetensors", "vae.safetensors"]
    assert sum(p.stat().st_size for p in path.iterdir()) <= 40 * 2**20
    from safetensors import safe_open

    with safe_open(str(path / "unet.safetensors"), "pt") as handle:
        assert handle.get_tensor(next(iter(handle.keys()))).dtype.is_floating_point
        assert str(handle.get_tensor(next(iter(handle.keys()))).dtype) == "torch.float16"


def test_demo_model_generates_a_finite_128px_image(demo):
    result = demo.generate("a lake at dawn", steps=4, seed=0, progress=False)
    image = np.asarray(result.images[0])
    assert image.shape == (128, 128, 3)
    assert image.std() > 5  # a picture, not a flat colour


def test_generate_without_model_uses_the_demo(tmp_path):
    from ldm.cli.generate import main

    assert main(["a meadow at noon", "--steps", "2", "--seed", "1", "--out", str(tmp_path / "m.png"), "--quiet"]) == 0
    assert (tmp_path / "m.png").is_file()


def test_inpaint_without_model_uses_the_demo(tmp_path):
    from PIL import Image

    from ldm.cli.inpaint import main

    Image.new("RGB", (128, 128), (40, 90, 200)).save(tmp_path / "in.png")
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (32, 32, 96, 96))
    mask.save(tmp_path / "mask.png")
    args = ["a red boat", "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    assert main([*args, "--steps", "2", "--seed", "1", "--out", str(tmp_path / "out.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "out.png").size == (128, 128)


def test_names_resolve_to_package_folders_and_a_path_wins(tmp_path, monkeypatch):
    assert resolve_model("scenes") == BUILTIN_MODELS["scenes"].path
    assert resolve_model(None) == BUILTIN_MODELS[DEFAULT_MODEL].path
    (tmp_path / "scenes").mkdir()  # a folder named like a built-in model, in the current directory
    monkeypatch.chdir(tmp_path)
    assert resolve_model("scenes") == Path("scenes")


def test_unknown_name_lists_the_builtin_names():
    with pytest.raises(UnknownModelError, match="scenes"):
        resolve_model("sceens")
    with pytest.raises(ModelError, match="nor is it a built-in model"):
        Pipeline.load("sceens")


def test_pipeline_loads_a_builtin_by_name():
    pipe = Pipeline.load("scenes")
    assert pipe.components.denoiser.config.sample_size == 16


def cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_list_models_shows_name_size_and_what_it_draws():
    result = cli("ldm.cli.generate", "--list-models")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("scenes"))
    assert "MiB" in line and "landscapes" in line


def test_generate_with_unknown_model_name_is_one_line_exit_2(tmp_path):
    result = cli("ldm.cli.generate", "a lake", "--model", "sceens", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "scenes" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_scenes_lcm_is_the_distilled_scenes_and_shares_its_vae_and_text_encoder():
    lcm = BUILTIN_MODELS["scenes-lcm"].path
    assert sorted(p.name for p in lcm.iterdir()) == ["MODEL_CARD.md", "denoiser.safetensors", "model.yaml"]
    student, teacher = Pipeline.load("scenes-lcm"), Pipeline.load("scenes")
    for part in ("vae", "text_encoder"):
        mine, theirs = student.components.modules()[part].state_dict(), teacher.components.modules()[part].state_dict()
        assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)
    assert student.components.denoiser.config.time_cond_proj_dim  # the guidance-scale embedding
    assert student.components.config.sampling.sampler == "lcm"


def test_scenes_lcm_samples_by_its_own_defaults(tmp_path):
    from PIL import Image

    from ldm.cli.generate import main

    assert main(["a lake at dawn", "--model", "scenes-lcm", "--seed", "1", "--out", str(tmp_path / "l.png"), "--quiet"]) == 0
    parameters = Image.open(tmp_path / "l.png").info["parameters"]
    assert "Steps: 4, Sampler: lcm" in parameters and "Model: scenes-lcm" in parameters


def test_scenes_flow_is_a_flow_dit_sharing_scenes_vae_and_text_encoder(tmp_path):
    from PIL import Image

    from ldm.cli.generate import main

    flow, base = Pipeline.load("scenes-flow"), Pipeline.load("scenes")
    for part in ("vae", "text_encoder"):
        mine, theirs = flow.components.modules()[part].state_dict(), base.components.modules()[part].state_dict()
        assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)
    assert type(flow.components.denoiser).__name__ == "PixArtTransformer2DModel"
    assert is_flow(flow.components.scheduler_config)
    assert main(["a lake at dawn", "--model", "scenes-flow", "--seed", "1", "--out", str(tmp_path / "f.png"), "--quiet"]) == 0
    parameters = Image.open(tmp_path / "f.png").info["parameters"]
    assert "Steps: 20, Sampler: flow-dpm++2m, CFG scale: 7.5" in parameters and "Model: scenes-flow" in parameters


def test_all_built_in_weights_together_stay_within_100_mb():
    from ldm.builtin_models import WEIGHTS_DIR

    files = [*WEIGHTS_DIR.rglob("*.safetensors"), *(REPO / "ldm" / "scenes" / "weights").rglob("*.safetensors")]
    assert sum(f.stat().st_size for f in files) <= 100 * 10**6
