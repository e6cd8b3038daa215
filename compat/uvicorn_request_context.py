"""Each HTTP request starts from an empty context, so that one request's trace is never the parent of the next.

What it changes: `uvicorn.Config.__init__` defaults `reset_contextvars` to True. The option is uvicorn's own
(each request task starts from an empty `contextvars.Context`), but BentoML builds the server's Config without
it and has no setting for it.

Why: asyncio can leak context between tasks. When a request's body arrives in several chunks, uvicorn resumes
reading the socket from inside the request task, and asyncio's `_add_reader` copies that task's context into
the connection's read callback. OpenTelemetry's span is in that context. The next request on the keep-alive
connection is then started from that callback with the stale span as current, and OpenTelemetry's ASGI
middleware, finding no `traceparent` header, takes it as its parent. The result: after an upload, every later
request on the connection answered with the upload's `X-Trace-Id` and joined its trace (tests/test_tracing.py).

Checked range: `uvicorn/config.py` and the task creation in `uvicorn/protocols/http/h11_impl.py` and
`httptools_impl.py` of 0.55.0.
"""

from __future__ import annotations

import functools
from typing import Any

import uvicorn

from compat import Patch

PATCH = Patch(
    name="uvicorn_request_context",
    library="uvicorn",
    checked=">=0.55.0,<0.56",
    why="BentoML starts uvicorn without reset_contextvars, so a request's trace leaks into the next on its connection",
    upstream="python/cpython#140947",
)


def install() -> None:
    original = uvicorn.Config.__init__

    @functools.wraps(original)
    def with_fresh_request_contexts(
        self: uvicorn.Config, *args: Any, reset_contextvars: bool = True, **kwargs: Any
    ) -> None:
        original(self, *args, reset_contextvars=reset_contextvars, **kwargs)

    uvicorn.Config.__init__ = with_fresh_request_contexts  # type: ignore[method-assign]
