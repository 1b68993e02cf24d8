"""ldm-generate with a model folder that declares its own sampling defaults (model.yaml `sampling:`)."""

import pytest
from PIL import Image
from tiny import build_tiny

from ldm.cli.generate import build_parser, main
from ldm.formats.model_folder import save_model
from ldm.png_info import parse_parameters


def lcm_model(path, **sampling):
    return save_model(build_tiny(unet__time_cond_proj_dim=32, sampling=sampling), path)


def used(png):
    fields = parse_parameters(Image.open(png).text["parameters"])
    return fields["Sampler"], fields["Steps"], fields["CFG scale"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return lcm_model(tmp_path_factory.mktemp("lcm") / "model", sampler="lcm", steps=2, cfg=1.5)


def test_the_models_defaults_apply_when_no_flag_is_given(model, tmp_path):
    assert main(["a lake", "--model", str(model), "--seed", "1", "--out", str(tmp_path / "a.png"), "--quiet"]) == 0
    assert used(tmp_path / "a.png") == ("lcm", "2", "1.5")


def test_a_flag_wins_over_the_models_default(model, tmp_path):
    args = ["a lake", "--model", str(model), "--seed", "1", "--steps", "3", "--cfg", "4", "--out", str(tmp_path / "b.png"), "--quiet"]
    assert main(args) == 0
    assert used(tmp_path / "b.png") == ("lcm", "3", "4")


def test_a_bad_sampler_in_the_model_is_one_line(tmp_path, capsys):
    bad = lcm_model(tmp_path / "bad", sampler="lcn")
    out = tmp_path / "c.png"
    with pytest.raises(SystemExit) as exit_:
        main(["a lake", "--model", str(bad), "--seed", "1", "--out", str(out), "--quiet"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "the model's default sampler (sampling.sampler in its config) is 'lcn'" in error and "\n" not in error and "Traceback" not in error
    assert not out.exists()


def test_help_says_the_model_may_choose():
    text = build_parser().format_help()
    assert "the model's own, else 20" in text and "sampling: {sampler, steps, cfg}" in text
