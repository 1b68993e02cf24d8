"""ldm-serve: a web page and an AUTOMATIC1111-compatible HTTP API on a model kept loaded."""
