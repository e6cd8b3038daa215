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
