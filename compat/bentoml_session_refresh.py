"""Runner calls are never cut by BentoML's session refresh: a replaced session is closed when its last call ends.

What it changes: `_bentoml_impl.client.proxy2.SessionManager`, which every runner client (`bentoml.depends`)
creates, is replaced by `DrainingSessionManager`, and `AsyncClient._call` and `is_ready` are wrapped
(`returning_its_sessions`): each call notes the session it takes and hands it back when it ends. The refresh
itself is kept: new calls get a fresh session (and new connections, spread again over a Kubernetes Service's
pods); only the close waits.

Why: BentoML's `SessionManager.get_session` replaces its aiohttp session once it is older than `max_age` (300 s)
or has served `max_requests` (100) calls, and closes the old one at once, under the calls still in flight on it.
They fail with `ServerDisconnectedError` or `RuntimeError("Session is closed")`; a front that sends them again
starts the work over (a 300 s generation took 8 minutes more, issue 25), and one that does not loses them.
Streaming endpoints read their body after `_call` returns, so they are not covered; no runner here streams.

Upstream: bentoml issues 5540 and 5544 (PR 5541 did not change this; docs/upstream.md). Checked range: `proxy2.py`
is the same in the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import aiohttp
from _bentoml_impl.client import proxy2
from _bentoml_impl.client.proxy2 import AsyncClient, SessionManager

from compat import Patch

PATCH = Patch(
    name="bentoml_session_refresh",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML's runner client closes its session under in-flight calls every 100 calls or 300 s",
    upstream="bentoml issues 5540, 5544",
)

StockSessionManager = SessionManager  # kept for tests/unit/test_compat.py once install() has replaced it
# The sessions the current runner call took (set by returning_its_sessions; None outside a call).
_call_sessions: ContextVar[list[aiohttp.ClientSession] | None] = ContextVar("runner_call_sessions", default=None)


class DrainingSessionManager(SessionManager):
    """BentoML's session holder, except that a replaced session stays open until no call is using it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_use: Counter[aiohttp.ClientSession] = Counter()
        self._retired: set[aiohttp.ClientSession] = set()
        self._closing: set[asyncio.Task[None]] = set()

    async def get_session(self) -> aiohttp.ClientSession:
        replaced = self._session
        if replaced is not None and self._should_refresh():
            self._session = None  # the stock code then makes a new one without closing this one
            self._retire(replaced)
        session = await super().get_session()
        taken = _call_sessions.get()
        if taken is not None:
            taken.append(session)
            self._in_use[session] += 1
        return session

    def release(self, session: aiohttp.ClientSession) -> None:
        """A call that took `session` has ended: close it if it was replaced and this was its last call."""
        self._in_use[session] -= 1
        if self._in_use[session] <= 0:
            del self._in_use[session]
            if session in self._retired:
                self._retired.discard(session)
                self._close_soon(session)

    def _retire(self, session: aiohttp.ClientSession) -> None:
        if self._in_use[session] > 0:
            self._retired.add(session)
        else:
            self._close_soon(session)

    def _close_soon(self, session: aiohttp.ClientSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """The client is closing (its server is shutting down): every session goes, in use or not."""
        await super().close()
        retired, self._retired = self._retired, set()
        await asyncio.gather(*(session.close() for session in retired), *self._closing)


def returning_its_sessions(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`method` of AsyncClient, with the sessions it takes noted and handed back to the manager when it ends."""

    @functools.wraps(method)
    async def call(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
        taken: list[aiohttp.ClientSession] = []
        token = _call_sessions.set(taken)
        try:
            return await method(self, *args, **kwargs)
        finally:
            _call_sessions.reset(token)
            manager = self._session_manager
            if isinstance(manager, DrainingSessionManager):
                for session in taken:
                    manager.release(session)

    return call


def install() -> None:
    proxy2.SessionManager = DrainingSessionManager  # type: ignore[misc]
    AsyncClient._call = returning_its_sessions(AsyncClient._call)  # type: ignore[method-assign]
    AsyncClient.is_ready = returning_its_sessions(AsyncClient.is_ready)  # type: ignore[method-assign]
