"""How long a request body may take, and a request's entry once its body is in.

A body must have arrived within `timeout_s` plus one second per `min_rate` bytes received (Apache's
mod_reqtimeout rule): an upload that keeps to the minimum rate on average is never cut, however large, and
one that stalls is dropped `timeout_s` after it began, plus what it sent allows. A dropped body is answered
408 in the one error shape (the client may still be there) with `Connection: close`, so the stalled
connection goes too. Nothing here holds a runner's room: front/admission.py takes one only once the body
is in, through `when_in`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
from starlette.responses import Response

from core.errors import error_response
from front.asgi import Message, Receive, Send


@dataclass(frozen=True)
class BodyPace:
    timeout_s: float
    min_bytes_per_s: float

    def deadline(self, started: float, received: int) -> float:
        return started + self.timeout_s + received / self.min_bytes_per_s

    def too_slow(self, received: int) -> Response:
        return error_response(
            "request_timeout",
            f"the body came too slowly: {received} bytes arrived; a body gets {self.timeout_s:g} s plus one second "
            f"per {self.min_bytes_per_s / 1024:g} KiB",
            field="body",
            headers={"Connection": "close"},
        )


class PacedBody:
    """One request's body as its app reads it, each wait bounded by the pace's deadline.

    `when_in` runs once, as the last piece of the body arrives, and may refuse the request with an answer.
    A refused or dropped request's app sees a disconnect, and its own answer is dropped: `answer` is sent instead.
    """

    def __init__(self, receive: Receive, pace: BodyPace, when_in: Callable[[], Response | None]) -> None:
        self.receive_from, self.pace, self.when_in = receive, pace, when_in
        self.started = anyio.current_time()
        self.received = 0
        self.complete = False
        self.replying = False  # the app's answer has begun: too late to answer in its place
        self.answer: Response | None = None

    async def receive(self) -> Message:
        if self.complete:
            return await self.receive_from()
        with anyio.move_on_after(self.pace.deadline(self.started, self.received) - anyio.current_time()):
            message = await self.receive_from()
            if message["type"] != "http.request":
                return message
            self.received += len(message.get("body", b""))
            if message.get("more_body", False):
                return message
            self.complete = True
            self.answer = self.when_in()
            return message if self.answer is None else {"type": "http.disconnect"}
        if not self.replying:
            self.answer = self.pace.too_slow(self.received)
        return {"type": "http.disconnect"}

    def sender(self, send: Send) -> Send:
        """`send` for the app: its answer passes unless the request was refused or dropped."""

        async def guarded(message: Message) -> None:
            if self.answer is None:
                self.replying = True
                await send(message)

        return guarded
