"""The one error the data layer raises before training starts."""

from ldm.errors import LdmError


class DataError(LdmError, ValueError):
    """Data that cannot be trained on (a missing path, no images, unreadable captions or
    metadata, an unknown source); the message names the path or setting in one line."""
