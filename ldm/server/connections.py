"""Connection limits for uvicorn: a client that sends nothing, or a request head a byte at a
time, or a body that stops coming, must not hold a socket for ever.

uvicorn (0.55, h11) closes a connection idle after a response (timeout_keep_alive) and answers
503 beyond limit_concurrency connections, but sets no deadline for reading a request: 200
sockets that never send a byte stay open for ever, and with a connection limit they would
even lock everybody out. ReadDeadlineProtocol adds the deadlines: the whole request head
within `head_seconds` of its first byte (or of the connection), and no pause longer than
`body_seconds` inside the body; past them the connection is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ConnectionLimits:
    head_seconds: float = 10.0  # to send the request line and headers
    body_seconds: float = 10.0  # the longest pause inside a request body
    keep_alive_seconds: int = 5  # idle between requests on one connection (uvicorn's default)
    max_connections: int = 64  # open at once; requests beyond get 503 (uvicorn's limit_concurrency)


class ReadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for reading a request (class attributes set by
    `protocol_for`)."""

    head_seconds = ConnectionLimits.head_seconds
    body_seconds = ConnectionLimits.body_seconds
    _deadline = None  # the armed asyncio.TimerHandle, if any

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(self.head_seconds)  # a connection that never sends a byte

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.body_seconds)  # each chunk of the body restarts the pause
        elif state is h11.IDLE and self._awaiting_head():
            if self._deadline is None:
                self._arm(self.head_seconds)  # from the first byte; more bytes do not extend it
        else:
            self._disarm()  # the request is whole: what follows is the job's time

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timeout takes over between requests
        super().on_response_complete()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.info("closed a connection that sent no whole request in time")
            self.transport.close()


def protocol_for(limits: ConnectionLimits) -> type[ReadDeadlineProtocol]:
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"head_seconds": limits.head_seconds, "body_seconds": limits.body_seconds})


def server_config(app, limits: ConnectionLimits = ConnectionLimits(), log_level: str = "warning") -> uvicorn.Config:
    """uvicorn's settings for `app` with `limits`."""
    return uvicorn.Config(
        app,
        http=protocol_for(limits),
        timeout_keep_alive=limits.keep_alive_seconds,
        limit_concurrency=limits.max_connections,
        log_level=log_level,
    )
