"""ldm-train says what the data layer read, converted and skipped (stderr, log.jsonl,
TensorBoard), and a dataset of only bad images ends in one line, exit 2, with the counts."""

import json

import pytest
import yaml
from PIL import Image

from configs import tiny_train_dict
from tiny_data import tiny_image_folder

from ldm.cli.train import main


def run_cli(capsys, tmp_path, stage, images, **changes):
    data = tiny_train_dict(stage, tmp_path / "run", max_steps=3, save_every=100)
    data["data"]["path"] = str(images)
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        status = main(["--config", str(path)])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err.strip().splitlines()


def all_bad_folder(folder):
    folder.mkdir()
    for n in range(4):
        (folder / f"{n}.jpg").write_bytes(b"not an image")
        (folder / f"{n}.txt").write_text("a caption")
    return folder


@pytest.mark.parametrize("stage", ["autoencoder", "clip", "inpaint", "text2img"])
def test_only_bad_images_end_in_one_line_with_the_counts(stage, capsys, tmp_path, request):
    changes = {"text2img": {"latent_cache": False}}  # uncached: the images are read by the batches
    if stage == "inpaint":
        changes["inpaint"] = {"init_from": str(request.getfixturevalue("tiny_model_dir"))}
    status, lines = run_cli(capsys, tmp_path, stage, all_bad_folder(tmp_path / "bad"), **changes)
    assert status == 2, lines
    assert len(lines) == 1 and lines[0].startswith("ldm-train: error: "), lines
    assert "4 images, 0 converted, 4 skipped (4 unreadable)" in lines[0]


def test_the_end_of_training_reports_skipped_and_converted_images(capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = tiny_image_folder(tmp_path / "images", n=4)
    Image.new("CMYK", (32, 32), (0, 100, 200, 0)).save(images / "cmyk.jpg")
    (images / "cmyk.txt").write_text("a cmyk square")
    (images / "broken.png").write_bytes(b"not an image")
    (images / "broken.txt").write_text("a broken file")
    status, lines = run_cli(capsys, tmp_path, "text2img", images)  # 6 samples, 3 batches of 2: all read
    assert status == 0, lines
    assert lines[-1].startswith("trained 3 steps; data: 6 images, 1 converted (1 CMYK->RGB), 1 skipped (1 unreadable); wrote ")
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    counts = next(row for row in rows if "data/skipped" in row)
    assert counts["step"] == 3 and counts["data/images"] == 6
    assert counts["data/converted/CMYK->RGB"] == 1 and counts["data/skipped/unreadable"] == 1
    assert {"note": "data: 6 images, 1 converted (1 CMYK->RGB), 1 skipped (1 unreadable)"} in rows
    events = EventAccumulator(str(tmp_path / "run" / "logs" / "train"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("data/skipped")] == [(3, 1.0)]


def test_data_exclude_skips_are_counted_and_said(capsys, tmp_path):
    images = tiny_image_folder(tmp_path / "images", n=8)
    (tmp_path / "exclude.txt").write_text("00001.png\n00006.png\nnot-there.png\n")
    status, lines = run_cli(capsys, tmp_path, "text2img", images, data={"exclude": str(tmp_path / "exclude.txt")})
    assert status == 0, lines  # 6 samples, 3 batches of 2: all read
    assert lines[-1].startswith("trained 3 steps; data: 8 images, 0 converted, 2 skipped (2 excluded); wrote ")
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"note": f"data: 8 samples: 6 for training, 0 held out for validation (data.validation: 0), 2 excluded "
                    f"(data.exclude {tmp_path / 'exclude.txt'}; 1 name in it matches no sample)"} in rows  # fmt: skip


def test_steps_not_applied_are_not_called_skipped_images(capsys, tmp_path, monkeypatch):
    from ldm.training.text2img_stage import Text2ImgModule

    forward = Text2ImgModule.forward
    monkeypatch.setattr(Text2ImgModule, "forward", lambda self, *a: (forward(self, *a)[0] * float("nan"), {}))
    status, lines = run_cli(capsys, tmp_path, "text2img", tiny_image_folder(tmp_path / "images", n=4), train={"max_bad_steps": 10})
    assert status == 0, lines
    assert lines[-1].startswith("trained 3 steps (3 not applied: non-finite loss or gradient); data: 4 images, 0 converted, 0 skipped")


@pytest.fixture
def backbone() -> str:
    """The data report does not depend on the backbone; the inpaint case needs a model folder."""
    return "unet"
