"""ASGI middlewares run before any route: the API key and the request body's size."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Optional

from fastapi import HTTPException


async def _send_error(send, status: int, message: str, headers: Optional[dict] = None) -> None:
    body = json.dumps({"error": "Unauthorized" if status == 401 else "Error", "detail": message}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


class ApiKeyGuard:
    """Every request (API, page, static files, OpenAPI docs) must carry the key: as a Bearer
    token (API clients), or as the password of HTTP Basic auth (browsers ask for it once and
    then send it with every request of the page, its scripts included)."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    def accepts(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer":
            return hmac.compare_digest(value.encode(), self.key)
        if scheme == "basic":
            try:
                _, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return hmac.compare_digest(password.encode(), self.key)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.accepts(_header(scope, b"authorization")):
            message = "this server needs its API key: 'Authorization: Bearer KEY' (or the key as Basic auth password)"
            await _send_error(send, 401, message, {"WWW-Authenticate": 'Basic realm="ldm-serve"'})
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413: by their Content-Length before
    reading, or while reading when they come in chunks without one."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    def too_large(self) -> str:
        return f"request body over the limit of {self.limit} bytes (raise it with --max-upload-bytes)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _header(scope, b"content-length")
        if length.isdigit() and int(length) > self.limit:
            return await _send_error(send, 413, self.too_large())
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # FastAPI re-raises HTTPExceptions met while reading the body: a 413 answer.
                raise HTTPException(413, self.too_large())
            return message

        await self.app(scope, counted_receive, send)
