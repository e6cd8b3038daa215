"""The job routes with a job id in the path (a Starlette app mounted at /jobs; submissions are BentoML APIs).

Documented in the OpenAPI document by front/openapi.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from front.access import ANONYMOUS, CALLER
from front.errors import error_response
from jobs.manager import JobManager

JOB_ID = re.compile(r"[0-9a-f]{32}")


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

    def parse(request: Request) -> tuple[str, str] | JSONResponse:
        job_id = request.path_params["job_id"]
        if not JOB_ID.fullmatch(job_id):
            return error_response("not_found", f"no job {job_id[:64]}")
        return job_id, request.scope.get(CALLER, ANONYMOUS)

    async def status(request: Request) -> Response:
        parsed = parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        found = await manager().find(*parsed)
        return found if isinstance(found, JSONResponse) else JSONResponse(found.status.model_dump(mode="json"))

    async def cancel(request: Request) -> Response:
        parsed = parse(request)
        return parsed if isinstance(parsed, JSONResponse) else await manager().cancel(*parsed)

    async def result(request: Request) -> Response:
        parsed = parse(request)
        return parsed if isinstance(parsed, JSONResponse) else await manager().result(*parsed)

    async def events(request: Request) -> Response:
        parsed = parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        found = await manager().find(*parsed)
        if isinstance(found, JSONResponse):
            return found
        return StreamingResponse(
            manager().events(*parsed),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return Starlette(
        routes=[
            Route("/{job_id}", status, methods=["GET"]),
            Route("/{job_id}", cancel, methods=["DELETE"]),
            Route("/{job_id}/cancel", cancel, methods=["POST"]),
            Route("/{job_id}/events", events, methods=["GET"]),
            Route("/{job_id}/result", result, methods=["GET"]),
        ]
    )
