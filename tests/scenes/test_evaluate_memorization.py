"""tools/evaluate.py --memorization DATA: the section, the JSON and the pairs sheet on the
tiny model; bad DATA is one line before anything is generated or written. (That a planted
copy is found and fresh pictures are not: tests/data/test_nearest.py.)"""

import json
import re

import pytest
import torch
from PIL import Image
from photo_like import picture

from ldm.scenes.attribute_classifier import AttributeClassifier, ClassifierConfig, save_classifier
from tool_scripts import load_tool

evaluate_tool = load_tool("evaluate.py", "evaluate_tool")


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "train"
    (folder / "sub").mkdir(parents=True)
    for n in range(24):
        picture(n, (48, 48)).save(folder / ("sub" if n % 2 else "") / f"{n:02d}.png")
    return folder


def test_memorization_section_json_and_pairs_sheet(tiny_model_dir, pictures, tmp_path, capsys):
    torch.manual_seed(0)
    classifier = tmp_path / "classifier.safetensors"
    save_classifier(AttributeClassifier(ClassifierConfig(input_size=32)), classifier, {})
    out = tmp_path / "report"
    argv = ["--model", str(tiny_model_dir), "--classifier", str(classifier), "--prompts", "heldout", "--prompts-per-pair", "1"]
    argv += ["--size", "32", "--n-per-prompt", "1", "--steps", "1", "--vae-images", "0", "--out", str(out), "--quiet"]
    assert evaluate_tool.main(argv + ["--memorization", str(pictures)]) == 0

    report = json.loads((out / "report.json").read_text())["memorization"]
    generated = report["generated"]
    assert generated >= 2 and 0 <= report["near_copies"] <= generated
    assert report["near_copy_share"] == report["near_copies"] / generated
    assert report["data"] == f"imagefolder {pictures} (24 images)"
    calibration = report["calibration"]
    assert calibration["pictures"] + calibration["with_copies"] == 2  # a seeded 10% of 24
    assert report["threshold"] == calibration["threshold"] and "10% of DATA" in calibration["heldout"]
    closest = report["closest"]
    assert all(re.fullmatch(r"prompt \d+ image 0 \(seed \d+\)", row["generated"]) for row in closest)
    assert all(len(row["nearest"]) == 3 for row in closest)
    distances = [row["nearest"][0]["distance"] for row in closest]
    assert distances == sorted(distances)
    assert all(n["training"].endswith(".png") and (pictures / n["training"]).is_file() for row in closest for n in row["nearest"])
    markdown = (out / "report.md").read_text()
    assert "## Memorization" in markdown and f"closer than **{report['threshold']}**" in markdown
    sheet = Image.open(out / "memorization.png")
    assert sheet.width == 2 * 160 and sheet.height == len(closest) * (160 + 14)
    assert "memorization.png" in capsys.readouterr().err


def test_memorization_with_a_held_out_folder(tiny_model_dir, pictures, tmp_path):
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    for n in range(100, 110):
        picture(n, (48, 48)).save(heldout / f"{n}.png")
    picture(3, (48, 48)).save(heldout / "copy-of-3.png")  # in the training data: not a new picture
    out = tmp_path / "report"
    argv = ["--model", str(tiny_model_dir), "--prompts", "heldout", "--prompts-per-pair", "1", "--size", "32"]
    argv += ["--n-per-prompt", "1", "--steps", "1", "--vae-images", "0", "--out", str(out), "--quiet"]
    assert evaluate_tool.main(argv + ["--memorization", str(pictures), "--memorization-heldout", str(heldout)]) == 0
    calibration = json.loads((out / "report.json").read_text())["memorization"]["calibration"]
    assert (calibration["pictures"], calibration["with_copies"]) == (10, 1)
    assert calibration["heldout"] == f"{heldout} against all of DATA"


def test_bad_data_is_one_line_before_anything_is_generated(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report"
    cases = [
        ([str(tmp_path / "missing")], "does not exist (give a folder of images or a training config)"),
        ([str(empty)], "no images found in"),
        ([str(empty.parent / "notes.txt")], "is neither a folder of images nor a training config"),
    ]
    (tmp_path / "notes.txt").write_text("hi")
    for data, message in cases:
        assert evaluate_tool.main(["--prompts", "heldout", "--out", str(out), "--memorization", *data]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("evaluate.py: error: ")
    held = ["--memorization", str(tmp_path), "--memorization-heldout", str(empty)]
    (tmp_path / "one.png").write_bytes(b"")
    picture(1, (32, 32)).save(tmp_path / "two.png")
    assert evaluate_tool.main(["--prompts", "heldout", "--out", str(out), *held]) == 2
    assert "no images found in" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--memorization", "x", "--sweep", "dpm++2m:2"], "--memorization goes with the standard evaluation"),
        (["--memorization-heldout", "x"], "--memorization-heldout goes with --memorization DATA"),
    ],
)
def test_memorization_flag_combinations(bad, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_tool.main(bad)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
