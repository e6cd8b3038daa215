"""Small ASGI helpers shared by the front's middlewares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def reply(send: Send, response: Any) -> None:
    """Send a Starlette response from inside a middleware (no scope or receive needed for a plain body)."""
    await response({"type": "http"}, None, send)


def on_startup(receive: Receive, callback: Callable[[], None]) -> Receive:
    """A lifespan `receive` that runs `callback` (on the server's loop) when the server starts the application.

    Signal handlers go here: the server installs its own before it starts the application.
    """

    async def lifespan_receive() -> Message:
        message = await receive()
        if message["type"] == "lifespan.startup":
            callback()
        return message

    return lifespan_receive
