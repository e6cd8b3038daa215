"""The job API over HTTP: the routes with a job id in the path (a Starlette app mounted at /jobs), and the answers
of the submissions (BentoML APIs in service.py). Each refusal of the manager is answered in the one error shape.

Documented in the OpenAPI document by jobs/openapi.py (service.py hands it to front/openapi.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from core.caller import ANONYMOUS, CALLER
from core.errors import error_response
from jobs.errors import JobNotFound, JobRefusal
from jobs.manager import JobManager
from jobs.records import JobStatus

JOB_ID = re.compile(r"[0-9a-f]{32}")
KEEPALIVE_S = 15.0  # an SSE comment now and then keeps proxies from closing a quiet stream
Handler = Callable[[Request], Awaitable[Response]]


def refusal_response(refusal: JobRefusal) -> JSONResponse:
    return error_response(refusal.kind, str(refusal), field=refusal.field, retry_after_s=refusal.retry_after_s)


def accepted(status: JobStatus) -> JSONResponse:
    """A submission's answer: 202 with the job's status, and where to follow it."""
    return JSONResponse(status.model_dump(mode="json"), status_code=202, headers={"Location": status.links.status})


def answering_refusals(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except JobRefusal as refusal:
            return refusal_response(refusal)

    return wrapper


def job_and_caller(request: Request) -> tuple[str, str]:
    job_id = request.path_params["job_id"]
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(f"no job {job_id[:64]}")
    return job_id, request.scope.get(CALLER, ANONYMOUS)


async def server_sent(statuses: AsyncIterator[JobStatus | None]) -> AsyncIterator[str]:
    async for status in statuses:
        yield ": keep-alive\n\n" if status is None else f"event: status\ndata: {status.model_dump_json()}\n\n"


class JobRoutes:
    """The app, made at import (BentoML mounts it then); the front sets `manager` when it starts."""

    def __init__(self) -> None:
        self.manager: JobManager | None = None
        self.app = job_routes(self.current)

    def current(self) -> JobManager:
        assert self.manager is not None, "the front service has not started"
        return self.manager


def job_routes(manager: Callable[[], JobManager]) -> Starlette:
    """The app; `manager` gives the front's job manager."""

    async def status(request: Request) -> Response:
        found = await manager().find(*job_and_caller(request))
        return JSONResponse(found.status.model_dump(mode="json"))

    async def cancel(request: Request) -> Response:
        status = await manager().cancel(*job_and_caller(request))
        return JSONResponse(status.model_dump(mode="json"), status_code=202)

    async def result(request: Request) -> Response:
        found = await manager().result(*job_and_caller(request))
        headers = {**found.headers, "Content-Length": str(found.size)}
        return StreamingResponse(found.chunks, media_type=found.media_type, headers=headers)

    async def events(request: Request) -> Response:
        statuses = await manager().events(*job_and_caller(request), quiet_s=KEEPALIVE_S)
        return StreamingResponse(
            server_sent(statuses),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    routes = {
        ("/{job_id}", "GET"): status,
        ("/{job_id}", "DELETE"): cancel,
        ("/{job_id}/cancel", "POST"): cancel,
        ("/{job_id}/events", "GET"): events,
        ("/{job_id}/result", "GET"): result,
    }
    return Starlette(
        routes=[
            Route(path, answering_refusals(handler), methods=[method]) for (path, method), handler in routes.items()
        ]
    )
