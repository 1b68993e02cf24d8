"""tools/compare_vaes.py: each VAE's ceilings, side by side, and its one-line errors."""

import json

import pytest
from tool_scripts import load_tool

compare_vaes = load_tool("compare_vaes.py", "compare_vaes_tool")


@pytest.fixture
def backbone() -> str:
    """Only the tiny model's VAE is used: one backbone is enough."""
    return "unet"


def test_each_vae_is_measured_in_its_own_row(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "vaes"
    argv = ["scenes", str(tiny_model_dir), "--n-per-prompt", "1", "--vae-images", "4", "--size", "64", "--out", str(out), "--quiet"]
    assert compare_vaes.main(argv) == 0
    rows = json.loads((out / "vaes.json").read_text())
    shipped, tiny = rows["scenes"], rows[str(tiny_model_dir)]
    assert shipped["latents"] == "8x8x4" and tiny["latents"] == "32x32x4"  # KL-f8 and the tiny KL-f2
    # The trained scenes VAE keeps the scenes; the untrained tiny one does not: so each row was
    # measured through its own VAE, not the pipeline's first one.
    assert shipped["reconstruction"]["psnr"] > tiny["reconstruction"]["psnr"] + 3
    assert shipped["adherence"]["canny"] > tiny["adherence"]["canny"]
    assert shipped["accuracy"]["all"]["images"] == 32  # one per prompt, seen and held-out
    assert 0 <= shipped["adherence"]["layout"] <= 1 and "sky" in shipped["layout_by_region"]
    printed = capsys.readouterr().out
    assert printed.strip() == (out / "vaes.md").read_text().strip()
    assert "| target | | 32 |" in printed and f"| {tiny_model_dir} | 32x32x4 |" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no/such/vae"], "model folder not found: no/such/vae"),
        (["scenes", "--n-per-prompt", "0"], "must be at least 1"),
        (["scenes", "--size", "30"], "--size must be a multiple of 8"),
        (["scenes", "--out", "TMP/a-file"], "exists and is not a folder"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    (tmp_path / "a-file").write_text("kept")
    try:
        argv = [arg.replace("TMP", str(tmp_path)) for arg in argv]
        code = compare_vaes.main(argv if "--out" in argv else [*argv, "--out", str(tmp_path / "out")])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists() and (tmp_path / "a-file").read_text() == "kept"
