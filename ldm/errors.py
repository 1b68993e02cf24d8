"""The one base of every ldm error, so a caller can catch all of them with one clause.

Each error's message is one line a user can act on; commands print it and exit 2 (bad
input) or 1 (a failed run). This module imports nothing, so anything may import it."""


class LdmError(Exception):
    """Base of every error ldm raises on purpose (bad input, unreadable files, failed runs)."""
