"""Requests stop holding memory once they end.

What it changes: `bentoml._internal.server.http.traffic.TimeoutMiddleware.__call__` (the middleware behind
`traffic={"timeout": ...}`, in the front and the runners) is replaced by `call_with_timer_cancelled`, the same
code with the timer's handle kept and cancelled when the request ends. It uses the middleware's `app`,
`timeout` and `_set_timer_out`.

Why: BentoML 1.4.39's middleware schedules `loop.call_later(timeout, ...)` for every request and never cancels
it, so each finished request's context (its tracing span, its scope; 5-60 KB) stays alive until the traffic
timeout passes: 15 minutes here, rate x 900 s x that in memory under sustained load (measured by
bench/edge_load.py, see bench/README.md). No upstream issue. Checked range:
`bentoml/_internal/server/http/traffic.py` is the same in the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse

from compat import Patch

PATCH = Patch(
    name="bentoml_timeout",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="TimeoutMiddleware never cancels its per-request timer, which keeps each request alive for the timeout",
)


async def call_with_timer_cancelled(self: TimeoutMiddleware, scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def first_message_resolves(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    answer = asyncio.ensure_future(self.app(scope, receive, first_message_resolves))
    try:
        await waiter
    except TimeoutError:
        if answer.cancel():
            body = {"error": f"Not able to process the request in {self.timeout} seconds"}
            await JSONResponse(body, status_code=504)(scope, receive, send)
    else:
        await answer
    finally:
        timer.cancel()


def install() -> None:
    TimeoutMiddleware.__call__ = call_with_timer_cancelled  # type: ignore[method-assign]
