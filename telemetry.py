"""Tracing for the front and the runners: BentoML's OpenTelemetry set-up from our settings, and our own spans.

BentoML traces every HTTP request (server spans) and propagates the trace to
the runners it calls, so one request is one trace across processes. Tracing
exports over OTLP/HTTP only when `AUDIO_STUDIO_OTLP_ENDPOINT` is set; without
it nothing is sampled, our spans are not recorded and nothing is exported.

A runner serves a batch of requests in one call, outside each request's own
context, so every job notes the context and time it was received in (see
`Received`), and the runner's spans for waiting in the batcher and for the
model phases are recorded afterwards, under each job's request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from settings import Settings

TRACER_NAME = "audio_studio"


def tracing_config(settings: Settings) -> dict[str, Any]:
    """The `tracing` section of a BentoML service configuration: OTLP/HTTP export, or none."""
    if not settings.otlp_endpoint:
        return {}
    return {
        "tracing": {
            "exporter_type": "otlp",
            "sample_rate": settings.trace_sample_rate,
            "otlp": {"protocol": "http", "endpoint": settings.otlp_endpoint},
        }
    }


def tracer() -> trace.Tracer:
    """BentoML's tracer provider (it never becomes OpenTelemetry's global one): compat/bentoml_tracer.py."""
    from compat.bentoml_tracer import tracer_provider  # not at the top: models/ import this module without BentoML

    return tracer_provider().get_tracer(TRACER_NAME)


def current_trace_id() -> str | None:
    """The current request's trace id as 32 hex digits, or None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span in the current trace (recorded only when the trace is sampled)."""
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


@dataclass(frozen=True)
class Received:
    """Where and when a job was received: the request's trace context and the wall-clock time."""

    context: otel_context.Context = field(default_factory=otel_context.get_current)
    time_ns: int = field(default_factory=time.time_ns)

    @property
    def sampled(self) -> bool:
        return trace.get_current_span(self.context).get_span_context().trace_flags.sampled


def record_span(
    parent: Received, name: str, start_ns: int, end_ns: int, attributes: Mapping[str, Any] | None = None
) -> None:
    """A span that happened already (a phase of a batch), under the request the job was received in."""
    if not parent.sampled:
        return
    done = tracer().start_span(name, context=parent.context, start_time=start_ns, attributes=attributes)
    done.end(end_time=end_ns)
