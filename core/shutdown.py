"""SIGTERM in a serving process: our own drain first, then the server's stop, so shutdown ends within its grace.

uvicorn (under BentoML) stops accepting connections the moment it sees SIGTERM and then waits, without a bound,
for every open request: a runner call or a job's event stream may take minutes, and new connections meanwhile sit
in the listening socket's backlog with no answer at all. So the front runs its drain first, while it still
answers (new work gets 503, readiness fails, work in flight has until the grace ends and is then stopped, its
runners told), and hands SIGTERM to the server only once nothing is left for it to wait on. A runner stops its
server at once and stops whatever it still runs when the grace ends. A second SIGTERM goes to the server at once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]


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


def on_sigterm(
    before_the_server: Callable[[], Awaitable[None]] | None = None, after: Callable[[], None] | None = None
) -> None:
    """Chain our SIGTERM handling to the server's handler (call on the server's loop, once it installed its own).

    `before_the_server` is awaited before the server hears of the signal (the front's drain); `after` runs once the
    server has (a runner's timer for the end of its grace).
    """
    loop = asyncio.get_running_loop()
    server_handler = signal.getsignal(signal.SIGTERM)
    signalled: list[int] = []
    draining: set[asyncio.Task[None]] = set()

    def tell_the_server(signum: int, frame: FrameType | None) -> None:
        if callable(server_handler):
            server_handler(signum, frame)
        if after is not None:
            after()

    def handle(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)
        if before_the_server is None or len(signalled) > 1:  # a second SIGTERM does not wait
            return loop.call_soon_threadsafe(tell_the_server, signum, None)

        def drain(drain_first: Callable[[], Awaitable[None]]) -> None:
            task = loop.create_task(drain_first())
            task.add_done_callback(lambda _: tell_the_server(signum, None))
            draining.add(task)  # kept alive until it ends

        loop.call_soon_threadsafe(drain, before_the_server)

    signal.signal(signal.SIGTERM, handle)
