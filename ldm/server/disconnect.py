"""Waiting for a job on behalf of an HTTP client that may leave: uvicorn does not cancel a
request's handler when its client disconnects, so the handler asks, while it waits."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ldm.server.worker import Worker

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client left first"; nobody reads it
POLL_SECONDS = 0.25


async def result_for(request: Request, worker: Worker, future: Future, poll: float = POLL_SECONDS):
    """The job's result, once done; if the client disconnects first (or the handler is
    cancelled), the job is abandoned: skipped if it has not started, stopped at its next step."""
    waiting = asyncio.wrap_future(future)
    try:
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=poll)
            if done:
                return waiting.result()
            if await request.is_disconnected():
                worker.abandon(future)
                waiting.add_done_callback(_read_outcome)
                raise HTTPException(CLIENT_CLOSED_REQUEST, "the client disconnected; its job was abandoned")
    except asyncio.CancelledError:
        worker.abandon(future)
        raise


def _read_outcome(waiting: asyncio.Future) -> None:
    """Reads the abandoned job's end (ClientGone), so asyncio does not warn that nobody did."""
    if not waiting.cancelled():
        waiting.exception()
