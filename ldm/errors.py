"""The base of every error ldm raises on purpose: its message is meant for the user, in one line."""


class LdmError(Exception):
    """Bad input or a state the user can fix; commands print the message and exit 2."""
