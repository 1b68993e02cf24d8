"""Tiled VAE passes (ldm.pipeline.tiling): the seams of the built-in VAE within the bound
measured for it (and outside it without the blend), `auto` tiling exactly when the memory
estimate says a whole pass would not fit, the explicit override, and tiled encodes in
img2img and inpainting."""

import pytest
import torch
from PIL import Image

import ldm.memory
import ldm.pipeline.batching
import ldm.pipeline.tiling
from ldm.builtin_models import resolve_model
from ldm.formats.model_folder import load_model
from ldm.images import from_pil
from ldm.memory import vae_bytes
from ldm.pipeline import Pipeline
from ldm.scenes.generator import make_scene
from ldm.settings import GenerationError

# Measured on the built-in VAE, a 256 px scene in 128 px tiles (its own size): max 78, mean
# 19.5 (0-255 units); without the blend (tiles side by side) max 165, mean 24.9. Tiles differ
# from a whole pass mostly because each tile's group norms see that tile only.
SEAM_MAX, SEAM_MEAN = 90.0, 21.0


@pytest.fixture
def backbone():
    return "unet"  # the VAE's business, not the denoiser's


def error_255(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.clamp(-1, 1) - b.clamp(-1, 1)).abs() * 127.5


@pytest.fixture(scope="module")
def scene_latents():
    pipe = Pipeline(load_model(resolve_model("scenes")))
    return pipe, pipe.encode_images(from_pil([make_scene(seed=3, size=256)[0]]))


def test_the_builtin_vae_decodes_in_tiles_within_the_seam_bound(scene_latents):
    pipe, latents = scene_latents
    error = error_255(pipe.decode(latents, tile=128), pipe.decode(latents))
    assert error.shape == (1, 3, 256, 256)
    assert error.max() <= SEAM_MAX and error.mean() <= SEAM_MEAN, (error.max(), error.mean())


def test_without_the_blend_the_seams_break_the_bound(scene_latents, monkeypatch):
    pipe, latents = scene_latents
    monkeypatch.setattr(ldm.pipeline.tiling, "OVERLAP", 0.0)  # tiles side by side, nothing blended
    assert error_255(pipe.decode(latents, tile=128), pipe.decode(latents)).max() > SEAM_MAX


def test_a_picture_within_one_tile_is_not_tiled_and_odd_sizes_keep_their_size(tiny_components):
    pipe = Pipeline(tiny_components)
    latents = torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(pipe.decode(latents, tile=32), pipe.decode(latents))
    latents = torch.randn(pipe.latent_shape(2, 96, 72), generator=torch.Generator().manual_seed(0))
    assert pipe.decode(latents, tile=32).shape == (2, 3, 72, 96)
    assert not tiny_components.vae.use_tiling  # the tiling was for that call only


@pytest.fixture
def small_tiles(tiny_components, monkeypatch):
    """The tiny model tiles at 32 px (its own size); its denoiser needs little memory, so the
    VAE's need decides."""
    monkeypatch.setattr(ldm.pipeline.tiling, "TILE_PIXELS", 16)
    monkeypatch.setattr(ldm.memory, "DENOISER_LIVE_TENSORS", 1)
    pipe = Pipeline(tiny_components)
    assert pipe.vae_tile == 32
    return pipe


def seen_sizes(pipe, monkeypatch) -> list[tuple[str, int, int]]:
    """The (part, height, width) of every input of the VAE's encoder (pixels) and decoder (latents)."""
    seen = []
    for part in ("encoder", "decoder"):
        module = getattr(pipe.components.vae, part)
        forward = module.forward
        monkeypatch.setattr(module, "forward", lambda x, *a, _f=forward, _p=part, **k: seen.append((_p, *x.shape[-2:])) or _f(x, *a, **k))
    return seen


def with_memory(monkeypatch, available: int) -> None:
    monkeypatch.setattr(ldm.pipeline.batching, "available_bytes", lambda device: available)


def test_auto_tiles_exactly_when_a_whole_pass_would_not_fit(small_tiles, monkeypatch):
    pipe, size = small_tiles, 64
    whole, tiled = vae_bytes(pipe.components, size, size), vae_bytes(pipe.components, size, size, tile=32)
    assert tiled < whole
    outcomes = {}
    for available in (whole, whole - 1):
        with_memory(monkeypatch, available)
        seen = seen_sizes(pipe, monkeypatch)
        result = pipe.generate("a lake", width=size, height=size, steps=1, seed=0, progress=False)
        outcomes[available] = result
        tiled_pass = whole > available
        assert max(height for _, height, _ in seen) == (16 if tiled_pass else 32), seen  # latent cells (2 px each)
        assert ("VAE tiling: on" in result.parameters[0].to_text()) == tiled_pass
    with_memory(monkeypatch, 10**12)
    forced = pipe.generate("a lake", width=size, height=size, steps=1, seed=0, progress=False, vae_tiling="on")
    assert forced.images[0].tobytes() == outcomes[whole - 1].images[0].tobytes()
    assert forced.images[0].tobytes() != outcomes[whole].images[0].tobytes()


def test_off_is_refused_where_only_tiles_fit(small_tiles, monkeypatch):
    with_memory(monkeypatch, vae_bytes(small_tiles.components, 64, 64) - 1)
    with pytest.raises(GenerationError, match=r"one 64x64 image needs about .* more than the .* available"):
        small_tiles.generate("a lake", width=64, height=64, steps=1, progress=False, vae_tiling="off")


def test_untiled_pictures_keep_their_png_parameters(small_tiles):
    text = small_tiles.generate("a lake", steps=1, seed=0, progress=False, vae_tiling="off").parameters[0].to_text()
    assert text == small_tiles.generate("a lake", steps=1, seed=0, progress=False).parameters[0].to_text()
    assert "VAE" not in text


def lower_half(size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, size // 2, size, size))
    return mask


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_edits_encode_their_picture_in_tiles(small_tiles, photo, monkeypatch, mode):
    picture = photo.resize((64, 64))
    seen = seen_sizes(small_tiles, monkeypatch)

    def edit(tiling):
        options = {"steps": 2, "seed": 0, "strength": 0.5, "progress": False, "vae_tiling": tiling}
        if mode == "img2img":
            return small_tiles.img2img("a lake", picture, **options)
        return small_tiles.inpaint("a lake", picture, lower_half(64), **options)

    whole = edit("off")
    assert {(part, h) for part, h, _ in seen} == {("encoder", 64), ("decoder", 32)}  # latents: 2 px a cell
    seen.clear()
    tiled = edit("on")
    assert {part for part, _, _ in seen} == {"encoder", "decoder"}
    assert max(h for part, h, _ in seen if part == "encoder") == 32 and max(h for part, h, _ in seen if part == "decoder") == 16
    assert tiled.images[0].size == whole.images[0].size == (64, 64)
    assert tiled.images[0].tobytes() != whole.images[0].tobytes()


def test_a_bad_tiling_choice_is_one_line(tiny_components):
    with pytest.raises(GenerationError, match="vae tiling must be one of auto, on, off, got 'yes'"):
        Pipeline(tiny_components).generate("a lake", steps=1, progress=False, vae_tiling="yes")
