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


def content_security_policy(**directives: str) -> str:
    """A page's Content-Security-Policy: nothing but what `directives` allow (names with `_` for `-`), never
    framed, no <base>, forms sent only here."""
    policy = {"default_src": "'none'", "base_uri": "'none'", "form_action": "'self'", "frame_ancestors": "'none'"}
    return "; ".join(f"{name.replace('_', '-')} {sources}" for name, sources in {**policy, **directives}.items())


class WithHeaders:
    """An ASGI app whose answers carry `headers` besides their own (a page's Content-Security-Policy)."""

    def __init__(self, app: Any, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
