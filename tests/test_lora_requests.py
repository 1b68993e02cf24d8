"""LoRAs in a generation request (Python API): applied for that request only, prompt tags,
PNG hashes, and how requests name them."""

import numpy as np
import pytest
from lora_files import random_lora, write_lora

from ldm.lora.apply import apply_loras
from ldm.lora.refs import file_hash, parse_lora_flag, prompt_lora_tags, without_lora_tags
from ldm.pipeline import Pipeline
from ldm.settings import GenerationError

QUICK = dict(seed=3, steps=2, cfg=5.0, sampler="ddim", progress=False)


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image) for image in result.images])


@pytest.fixture
def style(tiny_unet_components, tmp_path):
    return write_lora(random_lora(tiny_unet_components), tmp_path / "loras" / "style.safetensors", "kohya")


@pytest.fixture(autouse=True)
def lora_folder(tmp_path):
    (tmp_path / "loras").mkdir()


def test_a_request_with_a_lora_draws_as_the_lora_applied_and_leaves_the_base_model(tiny_unet_components, style):
    pipe = Pipeline(tiny_unet_components)
    base = pixels(pipe.generate("a red boat", **QUICK))
    with_lora = pixels(pipe.generate("a red boat", loras=((str(style), 0.8),), **QUICK))
    after = pixels(pipe.generate("a red boat", **QUICK))

    applied = apply_loras(tiny_unet_components, [(style, 0.8)])
    by_hand = pixels(pipe.generate("a red boat", **QUICK))
    applied.unload()

    assert np.abs(with_lora.astype(int) - base).max() > 0  # the LoRA does something
    assert np.array_equal(with_lora, by_hand)
    assert np.array_equal(after, base)


def test_weight_zero_is_the_base_model_exactly(tiny_unet_components, style):
    pipe = Pipeline(tiny_unet_components)
    assert np.array_equal(pixels(pipe.generate("a red boat", loras=((str(style), 0.0),), **QUICK)), pixels(pipe.generate("a red boat", **QUICK)))


def test_a_prompt_tag_is_the_lora_at_its_weight_and_the_encoder_never_reads_it(tiny_unet_components, style):
    pipe = Pipeline(tiny_unet_components)
    tagged = pipe.generate("a red boat <lora:style:0.5>", lora_dir=str(style.parent), **QUICK)
    flag = pipe.generate("a red boat", loras=((str(style), 0.5),), **QUICK)
    assert np.array_equal(pixels(tagged), pixels(flag))
    # The PNG keeps the prompt as written (A1111 does) and records the file's hash.
    fields = tagged.parameters[0].fields()
    assert tagged.parameters[0].settings.prompt == "a red boat <lora:style:0.5>"
    assert fields["Lora hashes"] == f"style: {file_hash(style)}"
    assert flag.parameters[0].fields()["Lora hashes"] == f"style: {file_hash(style)}"
    assert "Lora hashes" not in pipe.generate("a red boat", **QUICK).parameters[0].fields()


def test_the_base_model_comes_back_after_a_request_that_failed(tiny_unet_components, style, tmp_path):
    pipe = Pipeline(tiny_unet_components)
    base = pixels(pipe.generate("a red boat", **QUICK))

    def stop(step):
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        pipe.generate("a red boat", loras=((str(style), 1.0),), callback=stop, **QUICK)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(GenerationError, match="bad.safetensors") as error:
        pipe.generate("a red boat", loras=((str(style), 1.0), (str(bad), 1.0)), **QUICK)
    assert "\n" not in str(error.value)
    assert np.array_equal(pixels(pipe.generate("a red boat", **QUICK)), base)


def test_unknown_lora_names_are_errors_before_any_work(tiny_unet_components, tmp_path):
    pipe = Pipeline(tiny_unet_components)
    with pytest.raises(GenerationError, match="LoRA 'nowhere' not found in .*looked for nowhere.safetensors"):
        pipe.generate("<lora:nowhere:1> a boat", lora_dir=str(tmp_path), **QUICK)
    with pytest.raises(GenerationError, match="give a path, or --lora-dir"):
        pipe.generate("<lora:style> a boat", **QUICK)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("style.safetensors:0.8", ("style.safetensors", 0.8)),
        ("style.safetensors", ("style.safetensors", 1.0)),
        ("C:\\loras\\style.safetensors", ("C:\\loras\\style.safetensors", 1.0)),
        ("C:\\loras\\style.safetensors:-0.5", ("C:\\loras\\style.safetensors", -0.5)),
        ("style", ("style", 1.0)),
    ],
)
def test_lora_flag(text, expected):
    assert parse_lora_flag(text) == expected


def test_lora_flag_weight_must_be_finite():
    with pytest.raises(ValueError, match="must be a finite number"):
        parse_lora_flag("style.safetensors:nan")


def test_prompt_tags_are_read_and_removed():
    prompt = "<lora:style:0.5>a red boat, <lora:ink> at dawn"
    assert prompt_lora_tags(prompt) == [("style", 0.5), ("ink", 1.0)]
    assert without_lora_tags(prompt) == "a red boat,  at dawn"
    with pytest.raises(ValueError, match="the weight 'x' is not a number"):
        prompt_lora_tags("<lora:style:x>")


def test_prompt_tags_name_files_in_the_lora_dir_only(tiny_unet_components, style, tmp_path):
    pipe = Pipeline(tiny_unet_components)
    (tmp_path / "empty").mkdir()
    for tag in (f"<lora:{style}>", "<lora:../loras/style>", "<lora:../loras/style.safetensors>"):
        with pytest.raises(GenerationError, match="not found in"):
            pipe.generate(f"a boat {tag}", lora_dir=str(tmp_path / "empty"), **QUICK)


def test_a_model_folders_own_loras_are_found_by_name(tiny_unet_components, style, tmp_path):
    """LoRAs shipped in a model's loras/ folder (the built-in model's windmill) are what
    --lora NAME and <lora:NAME> find when no lora_dir is given; a given one wins."""
    import shutil

    from ldm.formats.model_folder import save_model

    folder = save_model(tiny_unet_components, tmp_path / "model")
    shutil.copytree(style.parent, folder / "loras")
    pipe = Pipeline.load(folder)
    assert pipe.lora_dir == str(folder / "loras")
    by_name = pipe.generate("a red boat", loras=(("style", 0.5),), **QUICK)
    tagged = pipe.generate("a red boat <lora:style:0.5>", **QUICK)
    by_path = Pipeline(tiny_unet_components).generate("a red boat", loras=((str(style), 0.5),), **QUICK)
    assert np.array_equal(pixels(by_name), pixels(by_path)) and np.array_equal(pixels(tagged), pixels(by_path))
    assert by_name.parameters[0].fields()["Lora hashes"] == f"style: {file_hash(style)}"
    with pytest.raises(GenerationError, match=r"LoRA 'style' not found in .*elsewhere"):
        pipe.generate("a red boat", loras=(("style", 0.5),), lora_dir=str(tmp_path / "elsewhere"), **QUICK)
