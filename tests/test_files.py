"""ldm.files: atomic file and folder replace, exclusive names, leftovers after a crash."""

import os
import stat

import pytest
from kill_between_renames import dead_pid

from ldm.files import (
    clean_leftovers,
    create_exclusive,
    publish_new_file,
    recover_folder,
    replacing_folder,
    temporary_name,
    write_file_atomic,
    writing_file,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_with_the_umask_permissions(tmp_path, umask_022):
    target = tmp_path / "a.txt"
    target.write_text("old")
    target.chmod(0o644)
    write_file_atomic(target, "new")
    assert target.read_text() == "new"
    assert mode(target) == 0o644
    assert os.listdir(tmp_path) == ["a.txt"]


def test_a_writer_that_makes_its_file_private_still_gives_the_usual_mode(tmp_path, umask_022):
    """safetensors' save_file replaces the file it is given with a 0600 one: a LoRA file or a
    single-file checkpoint must still be readable like any other new file."""
    import torch
    from safetensors.torch import save_file

    target = tmp_path / "style-lora.safetensors"
    with writing_file(target) as temp:
        save_file({"a": torch.zeros(2)}, str(temp))
    assert mode(target) == 0o644


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with writing_file(target) as temp:
            temp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_folder_replace_swaps_whole_folders_with_usual_permissions(tmp_path, umask_022):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with replacing_folder(target) as staging:
        (staging / "new.bin").write_text("new")
    assert sorted(os.listdir(target)) == ["new.bin"]
    assert mode(target) == 0o755 and mode(target / "new.bin") == 0o644
    assert os.listdir(tmp_path) == ["model"]


def test_failed_folder_replace_keeps_the_old_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with replacing_folder(target) as staging:
            (staging / "new.bin").write_text("half")
            raise RuntimeError("crash")
    assert os.listdir(target) == ["old.bin"]
    assert os.listdir(tmp_path) == ["model"]


def leftover(folder, name, kind, pid):
    path = folder / f".{name}.{kind}-{pid}-abcd1234"
    path.mkdir()
    (path / "file").write_text(kind)
    return path


def test_clean_leftovers_recovers_an_old_folder_whose_target_is_missing(tmp_path):
    pid = dead_pid()
    leftover(tmp_path, "model", "old", pid)
    leftover(tmp_path, "model", "tmp", pid)
    assert clean_leftovers(tmp_path) == [tmp_path / "model"]
    assert os.listdir(tmp_path) == ["model"]
    assert (tmp_path / "model" / "file").read_text() == "old"


def test_clean_leftovers_deletes_stale_ones_and_spares_running_writers(tmp_path):
    pid = dead_pid()
    (tmp_path / "model").mkdir()
    leftover(tmp_path, "model", "old", pid)
    leftover(tmp_path, "model", "tmp", pid)
    (tmp_path / ".a.png.tmp-legacy").write_text("")  # no pid: from a writer long gone
    running = leftover(tmp_path, "other", "tmp", os.getppid())
    (tmp_path / ".hidden").write_text("not ours")
    assert clean_leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == sorted([".hidden", "model", running.name])
    assert os.listdir(tmp_path / "model") == []


def test_clean_leftovers_of_one_name_only(tmp_path):
    pid = dead_pid()
    leftover(tmp_path, "model", "tmp", pid)
    other = leftover(tmp_path, "vae", "tmp", pid)
    clean_leftovers(tmp_path, "model")
    assert os.listdir(tmp_path) == [other.name]


def test_exclusive_names_are_never_taken_twice(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.write_text("first")
    second.write_text("second")
    assert publish_new_file(first, tmp_path / "image.png")
    assert not publish_new_file(second, tmp_path / "image.png")
    assert (tmp_path / "image.png").read_text() == "first" and second.exists() and not first.exists()
    assert create_exclusive(tmp_path / "new") and not create_exclusive(tmp_path / "new")


def test_temporary_names_are_leftover_names(tmp_path):
    from ldm.files import LEFTOVER

    match = LEFTOVER.match(temporary_name(tmp_path / "x.png", "old").name)
    assert match["name"] == "x.png" and match["kind"] == "old" and match["tag"].startswith(f"{os.getpid()}-")


def test_private_files_written_into_a_folder_get_the_usual_permissions(tmp_path, umask_022):
    from safetensors.torch import save_file
    import torch

    with replacing_folder(tmp_path / "model") as staging:
        save_file({"a": torch.zeros(2)}, str(staging / "w.safetensors"))  # safetensors writes 0600
        (staging / "run.sh").write_text("")
        (staging / "run.sh").chmod(0o700)
    assert mode(tmp_path / "model" / "w.safetensors") == 0o644
    assert mode(tmp_path / "model" / "run.sh") == 0o755


def test_recover_folder_puts_back_an_old_folder_of_a_gone_writer_and_deletes_nothing(tmp_path):
    """A save killed between the two renames of its swap: the next reader finds the folder."""
    pid = dead_pid()
    leftover(tmp_path, "model", "old", pid)
    stale = leftover(tmp_path, "model", "tmp", pid)
    assert recover_folder(tmp_path / "model") == tmp_path / "model"
    assert (tmp_path / "model" / "file").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == sorted(["model", stale.name])  # a reader removes nothing


def test_recover_folder_leaves_the_swap_of_a_running_writer_alone(tmp_path):
    running = leftover(tmp_path, "model", "old", os.getppid())  # its writer renames the new one in next
    assert not recover_folder(tmp_path / "model").exists()
    assert os.listdir(tmp_path) == [running.name]


def test_a_failed_rename_into_place_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "file").write_text("old")
    real_rename = os.rename

    def failing(source, destination):
        if os.path.basename(source).startswith(".model.tmp-"):
            raise OSError(5, "Input/output error")
        return real_rename(source, destination)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError):
        with replacing_folder(target) as staging:
            (staging / "file").write_text("new")
    assert os.listdir(tmp_path) == ["model"] and (target / "file").read_text() == "old"


def test_writing_a_file_removes_the_temporary_files_its_killed_writers_left(tmp_path):
    pid = dead_pid()
    target = tmp_path / "lora.safetensors"
    stale = [tmp_path / f".lora.safetensors.tmp-{pid}-abcd1234", tmp_path / ".lora.safetensors.tmp-k2j3h4g5"]  # ours; mkstemp's
    running = tmp_path / f".lora.safetensors.tmp-{os.getppid()}-abcd1234"
    other = tmp_path / f".other.safetensors.tmp-{pid}-abcd1234"
    for path in [*stale, running, other]:
        path.write_bytes(b"half a checkpoint")
    write_file_atomic(target, "new")
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, running.name, other.name])
