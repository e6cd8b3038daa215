"""A request's trace holds its server span, not one span per chunk of its body: BentoML's tracing middleware is
built without OpenTelemetry's per-message spans.

What it changes: `opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware`, which BentoML's app factory
(`_bentoml_impl.server.app.ServiceAppFactory.middlewares`) imports from that module each time it builds a server's
app, is replaced there by a subclass whose `exclude_spans` (the middleware's own option) defaults to receive and
send. BentoML passes no `exclude_spans` and has no setting for it.

Why: the middleware starts and ends a span for every ASGI message, whether the request is sampled or not. A 5.3 MB
upload reaches the front in about 22 socket reads and the runner gets its 1.9 MB of samples in about 9: one traced
30-request run held 660 `http receive` spans, and making them (plus the wrappers around each read) was a few ms
of the front's CPU per upload (bench/README.md). The server span keeps each request's time, and the spans of
telemetry.py its phases. No upstream issue. Checked range: `_bentoml_impl/server/app.py` is the same in the 1.4.40
wheel as in 1.4.39.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation import asgi

from compat import Patch

PATCH = Patch(
    name="bentoml_message_spans",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML's tracing middleware makes a span per ASGI message: ~22 per 5.3 MB upload, sampled or not",
)

StockOpenTelemetryMiddleware = asgi.OpenTelemetryMiddleware
EXCLUDED_SPANS = ["receive", "send"]


class ServerSpanOnly(StockOpenTelemetryMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exclude_spans", EXCLUDED_SPANS)
        super().__init__(*args, **kwargs)


def install() -> None:
    asgi.OpenTelemetryMiddleware = ServerSpanOnly  # type: ignore[misc]
