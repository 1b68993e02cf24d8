"""What ldm-train shows a person on the screen: how the data was split for validation, the
progress bar once, and on --resume the step it resumed from and what it read."""

from test_data_report import run_cli
from tiny_data import tiny_image_folder

from ldm.cli.train import main


def shown(capsys, tmp_path, images, **train):
    """A text2img run with the progress bar on, its latents cached, data.validation 16."""
    changes = {"train": {"progress": True, "save_every": 3, **train}, "text2img": {"latent_cache": True}, "data": {"validation": 16}}
    status, lines = run_cli(capsys, tmp_path, "text2img", images, **changes)
    assert status == 0, lines
    return [part for line in lines for part in line.split("\r") if part.strip()]  # bar redraws as lines


def test_the_validation_split_is_said_and_a_small_folder_keeps_most_for_training(capsys, tmp_path):
    lines = shown(capsys, tmp_path, tiny_image_folder(tmp_path / "images", n=10))
    expected = "data: 10 samples: 8 for training, 2 held out for validation (data.validation asks 16; at most 1 sample in 5 is held out)"
    assert expected in lines


def test_the_finished_bar_is_not_repeated_after_the_closing_notes(capsys, tmp_path):
    lines = shown(capsys, tmp_path, tiny_image_folder(tmp_path / "images", n=10))
    exported = next(i for i, line in enumerate(lines) if line.startswith("exported "))
    assert not [line for line in lines[exported:] if "3/3" in line], lines[exported:]


def test_a_resumed_run_says_its_first_step_and_what_it_read(capsys, tmp_path):
    images = tiny_image_folder(tmp_path / "images", n=10)
    shown(capsys, tmp_path, images)
    config = str(tmp_path / "config.yaml")
    assert main(["--config", config, "train.max_steps=5", "--resume", "latest"]) == 0
    lines = capsys.readouterr().err.splitlines()
    resumed = f"resumed at step 3 from {tmp_path / 'run' / 'checkpoints' / 'step-000003'}"
    assert any(line.endswith(resumed) for line in lines), lines
    # The latents come from the cache the first run built: no image is decoded, and it says so.
    assert lines[-1].startswith("trained steps 4-5 (resumed from step 3); data: no image read, trained on the cached latents of 8 samples; ")
