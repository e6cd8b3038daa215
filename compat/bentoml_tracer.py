"""Our spans go to BentoML's tracer provider, which only its private container holds.

What it relies on: BentoML builds its OpenTelemetry `TracerProvider` from the service's `tracing`
configuration (sampler, OTLP exporter) and keeps it in `BentoMLContainer.tracer_provider`. It never becomes
OpenTelemetry's global provider, and no public API returns it; spans from the global provider would miss
BentoML's sampler and exporter (and, with no global provider set, not be recorded at all).

No upstream issue. Checked range: `bentoml/_internal/configuration/containers.py` is the same in the 1.4.40
wheel as in 1.4.39.
"""

from __future__ import annotations

from bentoml._internal.configuration.containers import BentoMLContainer
from opentelemetry.trace import TracerProvider

from compat import Patch

PATCH = Patch(
    name="bentoml_tracer",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML's tracer provider is not OpenTelemetry's global one and has no public accessor",
)


def tracer_provider() -> TracerProvider:
    return BentoMLContainer.tracer_provider.get()
