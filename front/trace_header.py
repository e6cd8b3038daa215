"""Every answer names its trace: `X-Trace-Id`, to quote in a bug report and find in the logs and traces.

BentoML starts a trace for each request (its OpenTelemetry middleware sits
outside this one) and its log lines carry the same id. The id is there even
when tracing is off; the trace itself is then not recorded.
"""

from __future__ import annotations

from typing import Any

from front.asgi import Message, Scope
from telemetry import current_trace_id

HEADER = b"x-trace-id"


class TraceIdHeader:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        trace_id = current_trace_id()
        if trace_id is None:
            return await self.app(scope, receive, send)

        async def send_with_trace_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (HEADER, trace_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_trace_id)
