"""README's "Train on your own pictures": its three commands, copied from README.md and run
exactly as written (plus a small step count) on a generated folder of captioned pictures."""

import shlex
from pathlib import Path

from PIL import Image

REPO = Path(__file__).parents[2]
SECTION = "### Train on your own pictures"


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    block = block[: block.index("```")]
    return [line for line in block.splitlines() if line.strip()]


def make_pictures(folder: Path, n: int = 24) -> None:
    folder.mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    for i in range(n):
        name, colour = list(colours.items())[i % 3]
        image = Image.new("RGB", (72, 64), (240, 240, 240))
        image.paste(colour, (8 + i, 8, 40 + i, 40))
        image.save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a {name} square")


def test_readme_trains_in_three_commands(tmp_path, monkeypatch):
    from ldm.cli.train import main

    commands = readme_commands()
    assert len(commands) == 3 and all(c.startswith("ldm-train ") for c in commands)
    assert [shlex.split(c)[2] for c in commands] == ["cpu/autoencoder.yaml", "cpu/clip.yaml", "cpu/text2img.yaml"]
    monkeypatch.chdir(tmp_path)
    make_pictures(tmp_path / "my_pictures")
    for command in commands:
        assert main([*shlex.split(command)[1:], "train.max_steps=2"]) == 0, command
    for product in ("runs/cpu-autoencoder/vae", "runs/cpu-clip/text_encoder", "runs/cpu-text2img/model"):
        assert (tmp_path / product).is_dir(), product
