"""Crash-safe writing of files and folders: a crash at any moment leaves the old version or
the new one, never half of one, and never neither.

Everything new is written under a temporary name beside its target and renamed into place.
The names a crash can leave beside a target NAME (PID: the writer's process id):

    .NAME.tmp-PID-XXXXXXXX   a new version being written; stale ones are deleted
    .NAME.old-PID-XXXXXXXX   the old version of a folder, moved aside for the swap; when
                             NAME is missing (the crash came between the two renames) it is
                             renamed back to NAME, otherwise deleted

`clean_leftovers(folder)` does that, and leaves alone the leftovers of writers that are
still running (their PID is alive), so two processes may share a folder. Writers call it
before they write (writing_file: for its own file's name); loaders call
`recover_folder(path)`, which only renames an old folder back, so that a folder missing
after such a crash is found by the next reader, not only after the next save.
New files and folders get the usual permissions (what the umask allows), not 0600/0700.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<tag>.+)$")


def temporary_name(target: Path, kind: str = "tmp") -> Path:
    """A fresh name beside `target` that clean_leftovers recognises (kind: tmp or old)."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_folder(folder: Path) -> None:
    """Makes renames in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def current_umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def give_usual_permissions(folder: Path) -> None:
    """What the umask allows a new file or folder, for everything under `folder`: some
    writers (safetensors) make their files private (0600)."""
    umask = current_umask()
    folder.chmod(0o777 & ~umask)
    for entry in folder.rglob("*"):
        if entry.is_symlink():
            continue
        executable = entry.is_dir() or entry.stat().st_mode & 0o100
        entry.chmod((0o777 if executable else 0o666) & ~umask)


def _new_empty_file(path: Path) -> None:
    # 0o666 filtered by the umask: the permissions any program's new file gets (mkstemp's are 0600).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


# ----------------------------------------------------------------------------- files


@contextmanager
def writing_file(path: Union[str, Path], replace: bool = True) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write the new file to; when the block ends
    without an error it replaces `path` in one rename (replace=False: takes the name only if
    no file has it by then, else FileExistsError); on an error it is removed. Temporary
    files that killed writers of `path` left (gigabytes for a checkpoint) are removed first.
    Two threads of one process must not write the same `path` at once."""
    path = Path(path)
    clean_leftovers(path.parent, path.name)
    temp = temporary_name(path)
    _new_empty_file(temp)
    try:
        yield temp
        # Writers that replace the file (safetensors' save_file makes it 0600) get the usual mode back.
        temp.chmod(0o666 & ~current_umask())
        _fsync_file(temp)
        if replace:
            os.replace(temp, path)
        elif not publish_new_file(temp, path):
            raise FileExistsError(errno.EEXIST, "appeared while it was being written", str(path))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_file_atomic(path: Union[str, Path], data: Union[bytes, str]) -> None:
    """Replaces `path` with `data` (str is written as UTF-8) in one rename."""
    with writing_file(path) as temp:
        temp.write_bytes(data.encode() if isinstance(data, str) else data)


def publish_new_file(source: Path, target: Path) -> bool:
    """Gives the complete file `source` the name `target` only if no file has that name
    (atomically, so two processes never both get it); `source` is removed on success.
    False, with `source` untouched, when `target` is taken."""
    _fsync_file(source)
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links here (some network and FAT filesystems): claim the name, then fill it.
        if not create_exclusive(target):
            return False
        os.replace(source, target)
        return True
    source.unlink()
    fsync_folder(target.parent)
    return True


def create_exclusive(path: Path) -> bool:
    """Creates `path` empty if nobody has it yet; False if it exists."""
    try:
        _new_empty_file(path)
    except FileExistsError:
        return False
    return True


# ----------------------------------------------------------------------------- folders


@contextmanager
def replacing_folder(path: Union[str, Path]) -> Iterator[Path]:
    """Yields an empty staging folder beside `path`; when the block ends without an error,
    it becomes `path`, replacing an old folder there; on an error it is removed.

    POSIX cannot swap two folders in one rename, so the old one is renamed aside first and
    deleted only after the new one is in; a crash between the two renames leaves it at
    `.NAME.old-*`, and recover_folder (loaders) or clean_leftovers (writers) puts it back."""
    path = Path(path)
    staging = temporary_name(path)
    os.mkdir(staging, 0o777)  # the umask applies, as to any new folder (mkdtemp's is 0700)
    try:
        yield staging
        give_usual_permissions(staging)
        _fsync_tree(staging)
        _swap_in(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    for entry in folder.rglob("*"):
        if entry.is_file() and not entry.is_symlink():
            _fsync_file(entry)


def _swap_in(new: Path, target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)
    else:
        old = temporary_name(target, "old")
        os.rename(target, old)
        try:
            os.rename(new, target)  # killed before this line: recover_folder puts `old` back
        except BaseException:  # not killed: put it back now
            _put_back(old, target)
            raise
        fsync_folder(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    fsync_folder(target.parent)


def _put_back(old: Path, target: Path) -> None:
    try:
        os.rename(old, target)
    except OSError:  # a loader put it back first
        pass


# ----------------------------------------------------------------------------- leftovers


def _writer_pid(tag: str) -> Optional[int]:
    first = tag.split("-", 1)[0]
    return int(first) if first.isdigit() else None


def _writer_is_running(pid: Optional[int]) -> bool:
    """Whether the process that made a leftover may still be writing it. Our own PID counts
    as finished: such a leftover is from an earlier process that had it (PID 1 of another
    container run), since this one cleans before it writes and puts back what a failed swap
    moved aside."""
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _stale_leftovers(folder: Path, name: Optional[str], suffix: str) -> list[tuple[Path, re.Match]]:
    """The leftovers in `folder` (beside `name` when given, or beside names ending in
    `suffix`) whose writer is no longer running, old versions first."""
    try:
        entries = list(folder.iterdir())
    except OSError:  # missing or unreadable: nothing to do here
        return []
    stale = []
    for entry in entries:
        match = LEFTOVER.match(entry.name)
        if not match or (name is not None and match["name"] != name) or not match["name"].endswith(suffix):
            continue
        if not _writer_is_running(_writer_pid(match["tag"])):
            stale.append((entry, match))
    return sorted(stale, key=lambda leftover: leftover[1]["kind"] != "old")


def recover_folders(folder: Union[str, Path], name: Optional[str] = None, suffix: str = "") -> list[Path]:
    """Renames back every old folder in `folder` (only `name`'s when given, or those of names
    ending in `suffix`) whose swap was killed between its two renames: its target is missing
    and its writer no longer running. Deletes nothing. Returns the paths recovered."""
    folder = Path(folder)
    return _put_back_old_folders(folder, _stale_leftovers(folder, name, suffix))


def _put_back_old_folders(folder: Path, stale: list[tuple[Path, re.Match]]) -> list[Path]:
    """recover_folders over leftovers already listed."""
    recovered = []
    for entry, match in stale:
        target = folder / match["name"]
        if match["kind"] == "old" and not target.exists() and not target.is_symlink():
            try:
                os.rename(entry, target)
            except OSError:  # another process put it back first, or the folder is read-only
                continue
            recovered.append(target)
    if recovered:
        fsync_folder(folder)
    return recovered


def recover_folder(path: Union[str, Path]) -> Path:
    """`path`, put back first if a save killed between the two renames of its swap left it at
    `.NAME.old-*`. Everything that opens a model, component, ControlNet or checkpoint folder
    by path calls this, so the folder is found at once, not only after the next save there.
    Quiet on failure: the caller then finds `path` missing and says so, as it would have."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        recover_folders(path.parent, path.name)
    return path


def clean_leftovers(folder: Union[str, Path], name: Optional[str] = None, suffix: str = "") -> list[Path]:
    """Recovers or removes what crashed writes left in `folder` (only those beside `name`
    when given, or beside names ending in `suffix`): an old folder whose target is missing
    is renamed back; every other leftover of a writer no longer running is deleted (one
    that cannot be, say another user's in a shared folder, is left). Returns the paths recovered."""
    folder = Path(folder)
    stale = _stale_leftovers(folder, name, suffix)  # listed once: writers call this before every write
    recovered = _put_back_old_folders(folder, stale)
    for entry, _ in stale:
        if entry.exists() or entry.is_symlink():  # not one just renamed back
            try:
                _remove(entry)
            except OSError:
                continue
    return recovered
