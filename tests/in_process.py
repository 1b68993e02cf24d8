"""Runs a command's main(args) in the test's own process, ended as the command would end: its
exit status and what it printed. Saves a fresh interpreter and torch import (seconds) per case;
each command keeps a test that runs its real entry point in a fresh interpreter."""

import contextlib
import io
import subprocess
import warnings


def run_in_process(prog: str, main, *args) -> subprocess.CompletedProcess:
    """As subprocess.run(..., capture_output=True, text=True) would tell it: returncode, stdout, stderr.
    Warnings are shown as Python shows them to a command (a stray one is a second stderr line)."""
    argv = list(map(str, args))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # Python's own filters, not pytest's
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        try:
            status = main(argv)
        except SystemExit as stop:
            status = stop.code
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return subprocess.CompletedProcess([prog, *argv], status or 0, out.getvalue(), err.getvalue() + shown)
