"""Starts `ldm-serve` as a separate process and finds the port it listens on."""

from __future__ import annotations

import re
import subprocess
import sys
import threading


class ServerProcess:
    """A real `ldm-serve` process on a free port of 127.0.0.1 (the same code as the console
    script), for tests, the load test and the benchmark; `url` once it listens."""

    def __init__(self, *args, timeout: float = 180):
        command = [sys.executable, "-m", "ldm.cli.serve", "--port", "0", *map(str, args)]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        found = threading.Event()

        def read():
            for line in self.process.stderr:
                self.lines.append(line)
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(timeout):
            self.stop()
            raise RuntimeError("ldm-serve did not start: " + "".join(self.lines))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def rss_bytes(self) -> int:
        """The server's resident memory (Linux), to see it stay flat under load."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0
