"""ldm-data dedupe: a folder or a training config in, a report and an exclusion list out that
ldm-train's data.exclude reads; bad input is one line, exit 2, the cheap cases before torch."""

import json

import pytest
import yaml
from command_probe import run_main
from photo_like import jpeg, picture
from PIL import Image

from ldm.cli import data
from ldm.data import build_dataset
from ldm.data.config import DataConfig


def photo_folder(folder):
    """Eight distinct pictures, each with a caption; a half-size copy of p2, an exact copy of p5 (later in
    source order, so p5.jpg is kept)."""
    folder.mkdir()
    for n in range(8):
        (folder / f"p{n}.jpg").write_bytes(jpeg(picture(n), 95))
        (folder / f"p{n}.txt").write_text(f"picture {n}")
    (folder / "x-copies").mkdir()
    (folder / "x-copies" / "p2-small.jpg").write_bytes(jpeg(picture(2).resize((80, 60), Image.LANCZOS)))
    (folder / "x-copies" / "p2-small.txt").write_text("a copy")
    (folder / "x-copies" / "p5.jpg").write_bytes((folder / "p5.jpg").read_bytes())
    return folder


def run(capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        status = data.main([*map(str, args), "--no-progress"])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err.strip().splitlines()


def test_a_folder_gives_a_report_and_a_list_that_training_skips(capsys, tmp_path):
    photos = photo_folder(tmp_path / "photos")
    status, lines = run(capsys, "dedupe", photos, "--out", tmp_path / "out")
    assert status == 0 and len(lines) == 1, lines
    assert lines[0].startswith("ldm-data: 10 images: 2 groups of copies, 2 to exclude (1 exact, 1 near)")
    assert (tmp_path / "out" / "exclude.txt").read_text() == "x-copies/p2-small.jpg\nx-copies/p5.jpg\n"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    groups = {g["kept"]: g["others"] for g in report["duplicate_groups"]}
    assert set(groups) == {"p2.jpg", "p5.jpg"}
    assert groups["p5.jpg"][0]["kind"] == "exact" and groups["p2.jpg"][0]["kind"] == "near"
    dataset = build_dataset(DataConfig(path=str(photos), resolution=32, exclude=str(tmp_path / "out" / "exclude.txt")))
    assert {s["key"] for s in dataset} == {f"p{n}.jpg" for n in range(8)}


def test_a_training_config_with_overrides_is_read_as_ldm_train_reads_it(capsys, tmp_path):
    photos = photo_folder(tmp_path / "photos")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"stage": "text2img", "data": {"path": "elsewhere", "resolution": 32}}))
    status, lines = run(capsys, "dedupe", config, f"data.path={photos}", "--out", tmp_path / "out", "--workers", 2)
    assert status == 0 and "2 to exclude" in lines[0], lines
    status, lines = run(capsys, "dedupe", "cpu/text2img.yaml", f"data.path={photos}", "--out", tmp_path / "bundled")
    assert status == 0 and (tmp_path / "bundled" / "exclude.txt").read_text().count("\n") == 2, lines


def test_webdataset_shards_are_read_by_key(capsys, tmp_path):
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "shard-0.tar")) as writer:
        for n in range(4):
            writer.write({"__key__": f"k{n}", "jpg": jpeg(picture(n), 95), "txt": "a picture"})
        writer.write({"__key__": "k1-again", "jpg": jpeg(picture(1), 60), "txt": "a copy"})
    config = tmp_path / "shards.yaml"
    config.write_text(yaml.safe_dump({"stage": "text2img", "data": {"source": "webdataset", "path": str(tmp_path / "shard-0.tar")}}))
    status, lines = run(capsys, "dedupe", config, "--out", tmp_path / "out")
    assert status == 0 and "5 images: 1 group of copies, 1 to exclude (0 exact, 1 near)" in lines[0], lines
    assert (tmp_path / "out" / "exclude.txt").read_text() == "k1-again\n"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "nowhere", "does not exist (give a folder of images or a training config)"),
        (lambda tmp: (tmp / "a.png").write_bytes(b"x") and tmp / "a.png", "is neither a folder of images nor a training config"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no images found in"),
    ],
    ids=["missing", "not-a-folder", "empty-folder"],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, make, message):
    status, lines = run(capsys, "dedupe", make(tmp_path), "--out", tmp_path / "out")
    assert status == 2 and len(lines) == 1 and lines[0].startswith("ldm-data: error: ") and message in lines[0], lines
    assert not (tmp_path / "out" / "exclude.txt").exists()


def test_a_folder_of_only_unreadable_images_is_one_line(capsys, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not an image")
    status, lines = run(capsys, "dedupe", tmp_path / "bad", "--out", tmp_path / "out")
    assert status == 2 and lines == [f"ldm-data: error: no readable image among the 1 of imagefolder {tmp_path / 'bad'} (1 images)"]


def test_a_missing_path_or_a_bad_threshold_is_told_before_torch_loads(tmp_path):
    for args, message in (
        (["dedupe", tmp_path / "nowhere"], "does not exist"),
        (["dedupe", tmp_path, "--threshold", "200"], "--threshold is 200"),
        (["dedupe", tmp_path, "data.path=x"], "overrides apply to a training config only"),
        ([], "choose a command: dedupe"),
    ):
        status, torch_loaded, stderr = run_main("ldm.cli.data", *args)
        assert status == 2 and not torch_loaded and message in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_help_teaches_the_rule_the_files_and_data_exclude(capsys):
    with pytest.raises(SystemExit) as stop:
        data.main(["dedupe", "--help"])
    text = capsys.readouterr().out
    assert stop.value.code == 0
    for words in ("exact", "near", "--threshold", "the most pixels", "report.json", "exclude.txt", "data.exclude=", "docs/data.md"):
        assert words in text, words
