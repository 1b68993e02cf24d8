"""Where ldm-generate and ldm-inpaint put their PNGs: crash-safe, with the usual permissions,
never overwriting an image the user did not name, and no temporary files left behind."""

import os
import stat
import time

import pytest
from PIL import Image

from ldm.cli.common import check_writable, output_paths, save_png_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def picture(value):
    return Image.new("RGB", (4, 4), (value, value, value))


def pixel(path):
    return Image.open(path).getpixel((0, 0))[0]


def test_two_runs_into_one_folder_with_the_same_seed_keep_both_images(tmp_path):
    # Both runs plan their names before either saves (as concurrent runs do).
    first, second = output_paths(str(tmp_path), 1, 7), output_paths(str(tmp_path), 1, 7)
    assert first == second == [tmp_path / "00000-7.png"]
    written = [save_png_atomic(picture(10), first[0]), save_png_atomic(picture(20), second[0])]
    assert sorted(os.listdir(tmp_path)) == ["00000-7.png", "00001-7.png"]
    assert written == [tmp_path / "00000-7.png", tmp_path / "00001-7.png"]
    assert [pixel(p) for p in written] == [10, 20]


def test_a_number_taken_with_another_seed_is_skipped(tmp_path):
    planned = output_paths(str(tmp_path), 1, 7)[0]
    save_png_atomic(picture(10), tmp_path / "00000-3.png")  # another run, another seed
    assert save_png_atomic(picture(20), planned) == tmp_path / "00001-7.png"


def test_a_file_the_user_named_is_replaced(tmp_path):
    named = output_paths(str(tmp_path / "cat.png"), 1, 7)[0]
    save_png_atomic(picture(10), named)
    assert save_png_atomic(picture(20), named) == tmp_path / "cat.png"
    assert pixel(tmp_path / "cat.png") == 20 and os.listdir(tmp_path) == ["cat.png"]


def test_pngs_get_the_usual_permissions_and_keep_them_when_replaced(tmp_path, umask_022):
    named = tmp_path / "cat.png"
    save_png_atomic(picture(10), named)
    assert stat.S_IMODE(named.stat().st_mode) == 0o644
    save_png_atomic(picture(20), named)
    assert stat.S_IMODE(named.stat().st_mode) == 0o644
    (tmp_path / "folder").mkdir()
    numbered = save_png_atomic(picture(10), output_paths(str(tmp_path / "folder"), 1, 1)[0])
    assert stat.S_IMODE(numbered.stat().st_mode) == 0o644


def test_a_failed_save_leaves_no_temporary_file(tmp_path):
    class Broken:
        def save(self, path, **options):
            open(path, "wb").write(b"half")
            raise OSError(28, "No space left on device")

    for path in (tmp_path / "cat.png", output_paths(str(tmp_path), 1, 7)[0]):
        with pytest.raises(OSError):
            save_png_atomic(Broken(), path)
    assert os.listdir(tmp_path) == []


def test_temporary_pngs_of_crashed_runs_are_removed_on_the_next_run(tmp_path):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f".00000-7.png.tmp-{gone.pid}-abcd1234"
    legacy = tmp_path / ".00000-7.png.k3j_x9a1.tmp"  # the names before ldm.files
    recent_legacy = tmp_path / ".00001-7.png.zz3j_x9a.tmp"
    running = tmp_path / f".00002-7.png.tmp-{os.getppid()}-abcd1234"
    for path in (stale, legacy, recent_legacy, running):
        path.write_bytes(b"half")
    an_hour_ago = time.time() - 3600
    os.utime(legacy, (an_hour_ago, an_hour_ago))
    check_writable(output_paths(str(tmp_path), 1, 7))
    assert sorted(os.listdir(tmp_path)) == sorted([recent_legacy.name, running.name])
