"""One live run per output folder: OUTPUT/.ldm-train.lock names the process that trains into
it (PID, its start time, its parent and the host). A second ldm-train into the same folder is
refused while that process lives; a lock whose process is gone (kill -9, a crash, a reboot)
is stale and taken over with a notice, so --resume of a killed run just works.

Several processes (accelerate launch, torchrun): rank 0 takes the lock; the other ranks only
check that no live run of another launch holds it (theirs shares their parent, the launcher)."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ldm.errors import LdmError

LOCK_NAME = ".ldm-train.lock"


class RunLockError(LdmError):
    """Another live run writes into this output folder; one line naming its PID."""


@dataclass(frozen=True)
class Holder:
    pid: int
    started: Optional[str]  # /proc's start time of the PID: a reused PID is not the holder
    parent: int
    host: str

    def line(self) -> str:
        return f"{self.pid} {self.started or '-'} {self.parent} {self.host}\n"

    @classmethod
    def parse(cls, text: str) -> Optional["Holder"]:
        parts = text.split()
        if len(parts) != 4 or not parts[0].isdigit() or not parts[2].isdigit():
            return None  # a torn or foreign file: treated as stale
        return cls(int(parts[0]), None if parts[1] == "-" else parts[1], int(parts[2]), parts[3])

    def alive(self) -> bool:
        """Whether the holder still runs (on another host: assumed so, it cannot be checked)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        return self.started is None or process_start_time(self.pid) in (None, self.started)


def process_start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name before ")" may hold spaces


def this_process() -> Holder:
    pid = os.getpid()
    return Holder(pid, process_start_time(pid), os.getppid(), socket.gethostname())


def read_holder(path: Path) -> Optional[Holder]:
    try:
        return Holder.parse(path.read_text())
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def refusal(output_dir: Path, holder: Holder) -> str:
    where = "" if holder.host == socket.gethostname() else f" on host {holder.host}"
    return (
        f"{output_dir} is in use by a running ldm-train (PID {holder.pid}{where}); wait for it to end, stop it, "
        f"or set another train.output_dir (a lock left by a run that is gone: remove {output_dir / LOCK_NAME})"
    )


class RunLock:
    """The lock of one output folder, held by this process until release()."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.me = this_process()
        self.held = False

    def acquire(self) -> "RunLock":
        """Takes the lock (rank 0); RunLockError when a live run holds it."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path, "x") as file:  # atomic: of two starters, one creates it
                file.write(self.me.line())
        except FileExistsError:
            self.take_over()
        self.held = True
        return self

    def take_over(self) -> None:
        holder = read_holder(self.path)
        if holder == self.me:  # this process locked it before (ldm-train's main run twice in one process)
            return
        if holder is not None and holder.alive():
            raise RunLockError(refusal(self.output_dir, holder))
        gone = f"PID {holder.pid}, no longer running" if holder else "unreadable"
        print(f"ldm-train: taking over {self.path} ({gone})", file=sys.stderr)
        spare = self.path.with_name(f"{LOCK_NAME}.{self.me.pid}")
        spare.write_text(self.me.line())
        os.replace(spare, self.path)
        if read_holder(self.path) != self.me:  # another starter took it over in between
            raise RunLockError(refusal(self.output_dir, read_holder(self.path) or holder))

    def check(self) -> None:
        """Ranks other than 0: RunLockError when a live run of another launch holds the lock."""
        holder = read_holder(self.path)
        if holder is not None and holder.parent != self.me.parent and holder.host == self.me.host and holder.alive():
            raise RunLockError(refusal(self.output_dir, holder))

    def release(self) -> None:
        if self.held and read_holder(self.path) == self.me:
            self.path.unlink(missing_ok=True)
        self.held = False


def launch_rank() -> int:
    """This process's global rank under accelerate launch / torchrun (0 when launched alone)."""
    return int(os.environ.get("RANK", "0") or 0)


def lock_output_dir(output_dir: Path) -> RunLock:
    """Rank 0 takes the folder's lock; the other ranks check it. Release it when the run ends."""
    lock = RunLock(output_dir)
    if launch_rank() == 0:
        return lock.acquire()
    lock.check()
    return lock
