"""The one settings object: declared once, it drives the flags, the checks, the PNG parameters."""

import pytest

import ldm.pipeline
from ldm.cli import generate, inpaint
from ldm.pipeline import Pipeline
from ldm.png_info import ImageParameters, parse_parameters
from ldm.settings import GenerationError, Settings, fields_of, option_of


@pytest.mark.parametrize(("module", "mode"), [(generate, "img2img"), (inpaint, "inpaint")])
def test_every_setting_of_a_mode_is_a_flag_of_its_command(module, mode):
    help_text = module.build_parser().format_help()
    flags = [option_of(f).flag for f in fields_of(mode) if option_of(f).flag]
    assert flags and all(flag in help_text for flag in flags)


def test_flags_become_settings_and_unset_ones_stay_defaults():
    args = inpaint.build_parser().parse_args(["a boat", "--image", "x.png", "--pad", "8", "--cfg", "3", "--mask-blur", "0"])
    settings = ldm.cli.options.settings_from_args(args, "inpaint")
    assert settings == Settings(prompt="a boat", pad=(8, 8, 8, 8), cfg=3.0, mask_blur=0.0)


@pytest.mark.parametrize("value", ["scenes, v2", "model: final", "two\nlines", '"quoted"'])
def test_values_with_commas_colons_or_newlines_read_back_whole(value):
    """AUTOMATIC1111 quotes such values; unquoted, a model name with a comma split in two."""
    parameters = ImageParameters(Settings(prompt="a lake", seed=3), "txt2img", value, 64, 64)
    fields = parse_parameters(parameters.to_text())
    assert fields["Model"] == value
    assert (fields["Seed"], fields["Size"], fields["prompt"]) == ("3", "64x64", "a lake")


@pytest.mark.parametrize(
    "value, written",
    [
        ("plain", "Model: plain"),
        ("scenes, v2", 'Model: "scenes, v2"'),
        ("model: final", 'Model: "model: final"'),
        ("two\nlines", r'Model: "two\nlines"'),
        ('"quoted"', r'Model: "\"quoted\""'),
    ],
)
def test_the_written_line_quotes_as_automatic1111_does(value, written):
    """The text itself, not our parser's reading of it: other tools parse these PNGs (AUTOMATIC1111's
    quote(): JSON for a value with a comma, colon or newline; our parser reads a colon back either way)."""
    text = ImageParameters(Settings(prompt="a lake", seed=3), "txt2img", value, 64, 64).to_text()
    assert text == f"a lake\nSteps: 20, Sampler: dpm++2m, CFG scale: 7.5, Seed: 3, Size: 64x64, {written}"


def test_inpainting_fields_are_written_under_automatic1111_names():
    settings = Settings(prompt="p", seed=1, strength=0.5, mask_blur=2, crop_to_mask=16, pad=(1, 2, 3, 4))
    fields = parse_parameters(ImageParameters(settings, "inpaint", "m", 8, 8).to_text())
    assert fields["Denoising strength"] == "0.5" and fields["Mask blur"] == "2"
    assert fields["Inpaint area"] == "Only masked" and fields["Masked area padding"] == "16"
    assert fields["Outpaint padding"] == "1 2 3 4"


def test_a_settings_object_and_keywords_are_the_same_request(tiny_components):
    pipe = Pipeline(tiny_components)
    by_keywords = pipe.generate("a lake", steps=2, seed=5, cfg=3, progress=False)
    by_settings = pipe.generate(Settings(prompt="a lake", steps=2, seed=5, cfg=3), progress=False)
    assert by_keywords.images[0].tobytes() == by_settings.images[0].tobytes()
    assert by_keywords.parameters[0].to_text() == by_settings.parameters[0].to_text()


def test_a_plain_prompt_longer_than_the_text_encoder_reads_is_reported(tiny_components):
    """Only plain prompts are cut; A1111's syntax (the default) reads on in 75-token chunks."""
    encoder = tiny_components.first_text_encoder
    long_prompt = " ".join(["lake"] * (encoder.max_tokens + 5))
    assert Pipeline(tiny_components).generate(long_prompt, steps=1, seed=0, progress=False).notes == []
    result = Pipeline(tiny_components).generate(long_prompt, steps=1, seed=0, prompt_syntax="plain", progress=False)
    assert result.notes == [f"prompt is {encoder.max_tokens + 5} tokens; the text encoder reads the first {encoder.max_tokens}, "
                            "the rest is ignored"]  # fmt: skip
    assert Pipeline(tiny_components).generate("a lake", steps=1, seed=0, prompt_syntax="plain", progress=False).notes == []


def test_the_prompt_syntax_comes_from_the_request_else_the_model_else_a1111(tiny_components):
    pipe = Pipeline(tiny_components)
    assert pipe.request("a", {}).prompt_syntax == "a1111"
    tiny_components.config.sampling.prompt_syntax = "plain"
    assert pipe.request("a", {}).prompt_syntax == "plain"
    assert pipe.request("a", {"prompt_syntax": "a1111"}).prompt_syntax == "a1111"
    with pytest.raises(GenerationError, match="prompt syntax must be one of a1111, plain, got 'x'"):
        pipe.generate("a", prompt_syntax="x", steps=1, progress=False)
    fields = Settings(prompt_syntax="plain").png_fields("txt2img", "m", 64, 64)
    assert fields["Prompt syntax"] == "plain" and "Prompt syntax" not in Settings().png_fields("txt2img", "m", 64, 64)


def test_non_finite_images_are_an_error_not_a_black_picture(tiny_components):
    with pytest.raises(GenerationError, match="NaN/infinite values"):
        Pipeline(tiny_components).generate("a lake", steps=2, seed=0, cfg=1e38, progress=False)


def test_n_runs_in_batches_that_fit_the_memory(tiny_components, monkeypatch):
    pipe = Pipeline(tiny_components)
    per_image = ldm.pipeline.batching.image_bytes(tiny_components, 32, 32, guided=True)
    monkeypatch.setattr(ldm.pipeline.batching, "available_bytes", lambda device: 2 * per_image + 1)
    batches = []
    monkeypatch.setattr(pipe, "_draw", lambda plan, batch, *args, **kw: batches.append(len(batch)) or [None] * len(batch))
    pipe.generate("a lake", n=5, steps=1, seed=0, progress=False)
    assert batches == [2, 2, 1]
    monkeypatch.setattr(ldm.pipeline.batching, "available_bytes", lambda device: per_image - 1)
    with pytest.raises(GenerationError, match="one 32x32 image needs about .* more than the .* available"):
        pipe.generate("a lake", n=1, steps=1, seed=0, progress=False)
