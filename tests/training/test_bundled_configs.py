"""Bundled configs: one source of truth (configs/ links to ldm/configs), found by name from
any directory and from a wheel; each has a one-line purpose; --dry-run writes nothing."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ldm.bundled_configs import CONFIG_DIR, bundled_config_names, config_purpose, resolve_config_path
from ldm.config import ConfigError
from ldm.training.config import load_train_config

REPO = Path(__file__).parents[2]
SCRIPTS = Path(sys.executable).parent


def run(command, cwd, pythonpath=REPO, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    return subprocess.run(list(map(str, command)), capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_configs_folder_is_a_link_to_the_package_configs():
    assert (REPO / "configs").is_symlink()
    assert (REPO / "configs").resolve() == CONFIG_DIR.resolve()


def test_every_bundled_config_loads_and_opens_with_a_purpose_sentence():
    names = bundled_config_names()
    assert {"text2img.yaml", "cpu/text2img.yaml", "scenes/autoencoder.yaml"} <= set(names)
    for name in names:
        purpose = config_purpose(CONFIG_DIR / name)
        assert purpose.endswith("."), f"{name}: first comment line must be a one-line purpose"
        load_train_config(CONFIG_DIR / name)


def test_resolution_order(tmp_path, monkeypatch):
    assert resolve_config_path("text2img.yaml") == CONFIG_DIR / "text2img.yaml"
    assert resolve_config_path("cpu/text2img") == CONFIG_DIR / "cpu/text2img.yaml"
    monkeypatch.chdir(tmp_path)
    Path("text2img.yaml").write_text("stage: clip\n")  # a file of that name wins over the bundled one
    assert resolve_config_path("text2img.yaml") == Path("text2img.yaml")
    with pytest.raises(ConfigError, match="close matches: cpu/autoencoder.yaml"):
        resolve_config_path("cpu/autoencoer.yaml")


def test_unknown_name_is_one_line_with_close_matches(tmp_path):
    result = run([sys.executable, "-m", "ldm.cli.train", "--config", "txt2img.yaml"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "text2img.yaml" in lines[0] and "not found" in lines[0], result.stderr


def test_list_configs_prints_each_with_its_purpose(tmp_path):
    result = run([sys.executable, "-m", "ldm.cli.train", "--list-configs"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in bundled_config_names():
        assert f"{name}  " in result.stdout and config_purpose(CONFIG_DIR / name) in result.stdout


def check_sd_dry_run(result, cwd):
    assert result.returncode == 0, result.stderr
    assert "865,910,724  trainable" in result.stdout  # the SD 2.x U-Net
    assert "latents: 4 x 64 x 64" in result.stdout
    assert "GFLOP per optimizer step" in result.stdout and "MISSING" in result.stdout  # placeholder shards
    assert list(Path(cwd).iterdir()) == [], "a dry run writes nothing"


def test_literal_command_from_another_directory(tmp_path):
    ldm_train = shutil.which("ldm-train", path=str(SCRIPTS)) or shutil.which("ldm-train")
    assert ldm_train, "the ldm-train script is not installed"
    check_sd_dry_run(run([ldm_train, "--config", "text2img.yaml", "--dry-run"], cwd=tmp_path), tmp_path)


def test_wheel_carries_the_configs_and_resolves_them(tmp_path):
    """A non-editable install: the wheel built from a copy of the sources, unpacked and put
    on PYTHONPATH (the dependencies come from this environment); no network needed."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", "runs", "build", "*.egg-info", "__pycache__", ".venv", "venv", "data", "outputs")
    shutil.copytree(REPO, source, symlinks=True, ignore=ignore)
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", ".", "-w", tmp_path / "dist"], cwd=source)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("ldm-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    assert {f"ldm/configs/{name}" for name in bundled_config_names()} <= names
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = run([sys.executable, "-c", "import ldm; print(ldm.__file__)"], cwd=elsewhere, pythonpath=tmp_path / "installed")
    assert probe.stdout.strip().startswith(str(tmp_path / "installed")), probe.stdout + probe.stderr
    result = run([sys.executable, "-m", "ldm.cli.train", "--config", "text2img.yaml", "--dry-run"], cwd=elsewhere, pythonpath=tmp_path / "installed")
    check_sd_dry_run(result, elsewhere)
