"""The one error the data layer raises before training starts."""


class DataError(ValueError):
    """Data that cannot be trained on (a missing path, no images, unreadable captions or
    metadata, an unknown source); the message names the path or setting in one line."""
