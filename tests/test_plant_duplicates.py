"""tools/plant_duplicates.py: the copies it plants carry their original's caption and are the
kinds dedupe finds (the memorization experiment relies on both)."""

import json

import numpy as np
import pytest
from PIL import Image

from ldm.data.dedupe import fingerprint, group_duplicates
from tool_scripts import TOOLS, load_tool


@pytest.fixture
def plant_tool(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))  # as when run as a script: its sibling dedupe_benchmark
    return load_tool("plant_duplicates.py", "plant_duplicates_under_test")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for n in range(3):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # blocky: a picture, not noise, after resizing
        Image.fromarray(pixels).resize((64, 64), Image.NEAREST).save(tmp_path / f"{n}.png")
        lines.append({"file_name": f"{n}.png", "text": f"picture {n}", "attributes": {"n": n}})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return tmp_path


def test_planted_copies_keep_the_caption_and_dedupe_finds_them(plant_tool, folder):
    assert plant_tool.main([str(folder), "1.png", "--copies", str(len(plant_tool.FOUND_KINDS))]) == 0
    lines = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    copies = lines[3:]
    assert lines[:3] == [{"file_name": f"{n}.png", "text": f"picture {n}", "attributes": {"n": n}} for n in range(3)]
    assert len(copies) == len(plant_tool.FOUND_KINDS)
    assert {(line["text"], line["attributes"]["n"]) for line in copies} == {("picture 1", 1)}
    assert all((folder / line["file_name"]).is_file() for line in copies)
    prints = [fingerprint(line["file_name"], (folder / line["file_name"]).read_bytes()) for line in lines]
    groups = group_duplicates(prints)
    assert len(groups) == 1
    assert {groups[0].kept, *(d.key for d in groups[0].duplicates)} == {"1.png", *(line["file_name"] for line in copies)}


def test_an_image_not_in_the_metadata_is_one_line(plant_tool, folder, capsys):
    with pytest.raises(SystemExit) as stopped:
        plant_tool.main([str(folder), "missing.png"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == f"plant_duplicates.py: error: missing.png is not an image listed in {folder / 'metadata.jsonl'}"
    assert len((folder / "metadata.jsonl").read_text().splitlines()) == 3
