"""The front's HTTP edge: an ASGI middleware around BentoML's app that holds whatever the client sends.

For each public POST route it refuses a wrong Content-Type (415) and a body over
the route's limit (413) before the body is read (from Content-Length, or by
counting while it streams), gives every error answer the one shape of
`core.errors.ErrorResponse` (unknown paths and wrong methods included; the probes and /metrics stay plain
text), keeps the router's trailing-slash redirects relative (never built from the client's Host), and cancels
the request's work when the client disconnects (the runner call then tells its runner to drop the job). Readiness
answers within a bound even when a runner hangs. On SIGTERM the front drains
before its server stops (core/shutdown.py): new work gets 503, requests and this
process's jobs have until the grace ends, and what is still in flight then is
ended (requests with 503, jobs failed as interrupted) and its runners told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response

from core.errors import ErrorDetail, ErrorResponse, error_response, kind_of_status
from core.runner_calls import cancels_sent
from core.shutdown import on_sigterm, on_startup
from front.asgi import Message, Scope, reply

logger = logging.getLogger("bentoml.audio_studio")

# The largest valid JSON body, /generate's, is about 24 KB: two 1000-character prompts of characters outside the
# Basic Multilingual Plane escaped as \uXXXX pairs (12 bytes each). Anything much larger is only work to parse.
JSON_BODY_LIMIT = 64 * 1024
FORM_TEXT_ALLOWANCE = 1024 * 1024  # form fields and part headers beside the files
SHUTTING_DOWN = "the service is shutting down; retry"
READINESS_TIMEOUT_S = 3.0  # what the readiness probe may take before /readyz answers 503
READINESS_TICK_S = 0.1  # how often the probe's time is counted: a late tick is the front's own loop, not the probe
CLIENT_CLOSED_REQUEST = 499  # the access log's status for a request whose client left (nginx's convention)
JOB_PATHS = "/jobs/"  # status, events, result and cancel of a job: in flight until a shutdown's grace ends
PLAIN_TEXT_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")  # plain text, errors too, as the contract declares
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
ENDING_S = 5.0  # after the grace: how long ended requests get to answer and send their runners' cancels


@dataclass(frozen=True)
class RouteRules:
    media_types: tuple[str, ...]
    max_body_bytes: int


def route_rules(service: Any, max_upload_bytes: int, json_limits: dict[str, int]) -> dict[str, RouteRules]:
    """Rules per public POST route, from the service's own API table: form routes take uploads; a JSON route that
    carries audio (base64) has its limit in `json_limits`."""
    rules = {}
    for api in service.apis.values():
        file_fields = getattr(api.input_spec, "multipart_fields", ())
        if file_fields:
            limit = max_upload_bytes * len(file_fields) + FORM_TEXT_ALLOWANCE
            rules[api.route] = RouteRules(("multipart/form-data", "application/x-www-form-urlencoded"), limit)
        else:
            rules[api.route] = RouteRules(("application/json",), json_limits.get(api.route, JSON_BODY_LIMIT))
    return rules


def not_ready(reason: str) -> PlainTextResponse:
    """Plain text, as BentoML's own /readyz answers and the contract declares."""
    return PlainTextResponse(reason, status_code=503)


def size_text(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size / 2**10:g} KiB"


@dataclass
class Exchange:
    """One request as the edge follows it: how much body came, whether the answer started, who left."""

    max_body_bytes: int
    body_bytes: int = 0
    overflowed: bool = False
    body_done: asyncio.Event = field(default_factory=asyncio.Event)
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    response_started: bool = False
    response_done: bool = False


class EdgeGuard:
    def __init__(
        self,
        app: Any,
        service: Any,
        max_upload_bytes: int,
        shutdown_grace_s: float,
        stop_jobs: Callable[[float], Awaitable[None]],
        json_limits: dict[str, int] | None = None,
        readyz: str = "/readyz",
    ) -> None:
        """`stop_jobs(deadline)`: this process's jobs end by themselves until `deadline` (the loop's clock), and
        are stopped then (jobs/manager.py)."""
        self.app = app
        self.rules = route_rules(service, max_upload_bytes, json_limits or {})
        self.readyz = readyz
        self.shutdown_grace_s = shutdown_grace_s
        self.stop_jobs = stop_jobs
        self.draining = False
        self.in_flight: set[anyio.CancelScope] = set()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, on_startup(receive, lambda: on_sigterm(self.drain)), send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == self.readyz:
            return await self.bounded_readiness(scope, receive, send)
        rules = self.rules.get(scope["path"])
        if rules is None or scope["method"] != "POST":
            return await self.unguarded(scope, receive, send)
        refusal = self.refusal(Headers(scope=scope), rules)
        if refusal is not None:
            return await reply(send, refusal)
        await self.guarded(scope, receive, send, Exchange(rules.max_body_bytes))

    async def unguarded(self, scope: Scope, receive: Any, send: Any) -> None:
        """Any other request (GETs, unknown paths, a route's wrong method): its errors take the one shape too
        (Starlette's plain `Not Found`, `Method Not Allowed`), but for the probes and /metrics, plain text by
        contract; and the router's trailing-slash redirects never name the client's Host."""
        if scope["path"] in PLAIN_TEXT_PATHS:
            return await self.app(scope, receive, send)
        shaped = TrailingSlash(scope, ErrorShaper(send, Exchange(JSON_BODY_LIMIT)))
        if scope["path"].startswith(JOB_PATHS):
            # Event streams and result downloads are in flight too: a shutdown ends them after its grace.
            with self.tracked():
                return await self.app(scope, receive, shaped)
        await self.app(scope, receive, shaped)

    # ---- before the body -------------------------------------------------------

    def refusal(self, headers: Headers, rules: RouteRules) -> Any:
        """An answer given from the headers alone, or None to let the request in."""
        if self.draining:
            return error_response("unavailable", SHUTTING_DOWN)
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in rules.media_types:
            return error_response(
                "unsupported_media_type", f"this route takes {' or '.join(rules.media_types)}", field="Content-Type"
            )
        length = headers.get("content-length")
        if length is not None and not length.strip().isdigit():
            return error_response("invalid_input", "must be a whole number of bytes", field="Content-Length")
        if length is not None and int(length) > rules.max_body_bytes:
            return error_response(
                "too_large",
                f"the body is {int(length)} bytes; the limit for this route is {size_text(rules.max_body_bytes)}",
                field="body",
            )
        return None

    # ---- during the request ----------------------------------------------------

    async def guarded(self, scope: Scope, receive: Any, send: Any, exchange: Exchange) -> None:
        async def metered_receive() -> Message:
            if exchange.body_done.is_set():  # the app asks again after the body: only a disconnect can come
                await exchange.client_gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                exchange.client_gone.set()
                return message
            exchange.body_bytes += len(message.get("body", b""))
            if exchange.body_bytes > exchange.max_body_bytes:
                exchange.overflowed = True
                return {"type": "http.disconnect"}  # Starlette stops reading; the edge answers 413 below
            if not message.get("more_body", False):
                exchange.body_done.set()
            return message

        shaped_send = ErrorShaper(send, exchange)
        with self.tracked() as work:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(self.watch_disconnect, receive, exchange, work)
                await self.app(scope, metered_receive, shaped_send)
                watchers.cancel_scope.cancel()
        if exchange.response_started:
            return
        if exchange.client_gone.is_set():
            # Nobody reads this, but BentoML's timeout middleware waits for a first message until its timeout
            # (15 minutes here), holding the request task and with it the server's shutdown.
            await reply(send, Response(status_code=CLIENT_CLOSED_REQUEST))
        elif exchange.overflowed:
            await reply(
                send,
                error_response(
                    "too_large", f"the body is over this route's limit of {size_text(exchange.max_body_bytes)}", "body"
                ),
            )
        elif work.cancelled_caught:
            await reply(send, error_response("unavailable", SHUTTING_DOWN))

    @staticmethod
    async def watch_disconnect(receive: Any, exchange: Exchange, work: anyio.CancelScope) -> None:
        """After the body, the server's next message is a disconnect: the client left, or the answer was sent."""
        await exchange.body_done.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
        if not exchange.response_done:
            exchange.client_gone.set()
            logger.info("client disconnected before its answer; cancelling its work")
            work.cancel()

    # ---- readiness and shutdown ------------------------------------------------

    async def bounded_readiness(self, scope: Scope, receive: Any, send: Any) -> None:
        """BentoML's /readyz asks every runner; a frozen runner would hang it. Answer 503 after a bound instead.

        Only the probe's own time counts toward the bound: while this front's event loop is busy with other
        requests (the probe's answer cannot even be read then), the clock a tick sees beyond its length is the
        front's, and a runner is not blamed for it.
        """
        if self.draining:
            return await reply(send, not_ready(SHUTTING_DOWN))
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        loop = asyncio.get_running_loop()
        probe = asyncio.ensure_future(self.app(scope, receive, capture))
        probe_s = busy_s = 0.0
        while not probe.done():
            if probe_s >= READINESS_TIMEOUT_S:
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
                busy = f" (this front's event loop was busy for {busy_s:.1f} s besides)" if busy_s >= 1 else ""
                reason = f"a runner did not answer its readiness probe in {READINESS_TIMEOUT_S:g} s{busy}"
                return await reply(send, not_ready(reason))
            started = loop.time()
            await asyncio.wait([probe], timeout=READINESS_TICK_S)
            elapsed = loop.time() - started
            probe_s += min(elapsed, READINESS_TICK_S)
            busy_s += max(elapsed - READINESS_TICK_S, 0.0)
        probe.result()
        for message in captured:
            await send(message)

    @contextlib.contextmanager
    def tracked(self) -> Iterator[anyio.CancelScope]:
        """A request in flight, which a shutdown waits for and ends after its grace."""
        with anyio.CancelScope() as work:
            self.in_flight.add(work)
            try:
                yield work
            finally:
                self.in_flight.discard(work)

    async def drain(self) -> None:
        """SIGTERM, before the server hears of it: no new work; what is in flight has until the grace ends."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace_s
        logger.info(
            "SIGTERM: no new work; %d request(s) in flight and this process's jobs get %g s",
            len(self.in_flight),
            self.shutdown_grace_s,
        )
        await self.stop_jobs(deadline)
        await self.settled(deadline)
        if self.in_flight:
            logger.warning("shutdown grace over: ending %d request(s) with 503", len(self.in_flight))
            for work in list(self.in_flight):
                work.cancel()
            await self.settled(loop.time() + ENDING_S)
        await cancels_sent()  # the runners hear of the work just stopped before the server closes its clients
        logger.info("drained: the server stops now")

    async def settled(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.1)


class TrailingSlash:
    """Starlette's router answers a path that differs from a route by a trailing slash with a redirect to an
    absolute URL built from the client's Host header (`GET /ui` with `Host: evil.example` went to
    `http://evil.example/ui/`). A page's folder (`GET /ui`) keeps its redirect, made relative (`/ui/`); any other
    (`POST /generate/`, `GET /docs.json/`) is a 404 in the error shape: an API route has one path. Nothing else
    in the app redirects."""

    def __init__(self, scope: Scope, send: Any) -> None:
        self.send = send
        path, query = scope["path"], scope.get("query_string", b"").decode("latin-1")
        folder = scope["method"] in ("GET", "HEAD") and not path.endswith("/")
        # One leading slash: `//host/` would be a protocol-relative URL, an open redirect.
        self.location = "/" + quote(path.lstrip("/")) + "/" + (f"?{query}" if query else "") if folder else None
        self.redirect_status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] in REDIRECT_STATUSES:
            self.redirect_status = message["status"]
            return
        if self.redirect_status is None:
            return await self.send(message)
        if message.get("more_body", False):
            return  # the redirect's own body: answered below instead
        if self.location is None:
            return await reply(self.send, error_response("not_found", "Not Found"))
        await reply(self.send, Response(status_code=self.redirect_status, headers={"Location": self.location}))


class ErrorShaper:
    """Rewrites every error answer of a public route into the ErrorResponse shape (BentoML's own included)."""

    def __init__(self, send: Any, exchange: Exchange) -> None:
        self.send, self.exchange = send, exchange
        self.held_start: Message | None = None
        self.held_body = bytearray()

    async def __call__(self, message: Message) -> None:
        if self.exchange.overflowed:
            return  # the app's answer to a body cut short; the edge answers 413 itself
        if message["type"] == "http.response.start":
            self.exchange.response_started = True
            if message["status"] >= 400:
                self.held_start = message
                return
        elif message["type"] == "http.response.body":
            last = not message.get("more_body", False)
            if last:
                self.exchange.response_done = True
            if self.held_start is not None:
                self.held_body += message.get("body", b"")
                if not last:
                    return
                return await self.send_shaped()
        await self.send(message)

    async def send_shaped(self) -> None:
        assert self.held_start is not None
        status = self.held_start["status"]
        body = shaped_error(status, bytes(self.held_body))
        headers = [
            (k, v) for k, v in self.held_start["headers"] if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.send({**self.held_start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


GENERIC_ERROR = "an unexpected error occurred; it has been logged"


def shaped_error(status: int, body: bytes) -> bytes:
    """`body` in the ErrorResponse shape; BentoML's validation errors keep their per-field entries."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and "kind" in data and "error" in data:
        return body  # ours already
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # BentoML answers other 4xx as a one-element list
    data = data if isinstance(data, dict) else {}
    if status == 400 and isinstance(data.get("detail"), list):
        details = [
            ErrorDetail(
                loc=[p if isinstance(p, int) else str(p) for p in d.get("loc", [])], msg=d["msg"], type=d["type"]
            )
            for d in data["detail"]
            if isinstance(d, dict) and "msg" in d and "type" in d
        ]
        for d in details:
            d.loc = d.loc or ["body"]
            d.msg = d.msg.removeprefix("Value error, ")
        summary = "; ".join(f"{'.'.join(map(str, d.loc))}: {d.msg}" for d in details)
        shaped = ErrorResponse(error=summary or "invalid request", kind="invalid_input", detail=details)
    else:
        kind = kind_of_status(status)
        message = data.get("error") if status < 500 and isinstance(data.get("error"), str) else None
        if message is None and status < 500 and not data:  # Starlette's plain-text answers: "Not Found", ...
            message = body.decode(errors="replace").strip()[:200] or None
        shaped = ErrorResponse(error=message or (GENERIC_ERROR if status >= 500 else "bad request"), kind=kind)
    return shaped.model_dump_json().encode()
