"""What a runner reports about each batch it served: trace spans per job and phase-duration metrics.

For every job: a span for the time it waited in BentoML's batcher (from when its
request was received to when its batch started) and one span per model phase of
its group, each under the job's own request span, with the batch and group
sizes. For every group: each phase's duration in a Prometheus histogram.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import Histogram

from runners.batching import GroupRun
from schemas import RunnerJob
from telemetry import record_span

PHASE_SECONDS = Histogram(
    "audio_studio_model_phase_seconds",
    "Duration of one model phase for one group of jobs run together",
    ["runner", "phase"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
BATCH_WAIT_SECONDS = Histogram(
    "audio_studio_batch_wait_seconds",
    "Time a job waited in the runner's adaptive batcher before its batch started",
    ["runner"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)


def observe_batch(runner: str, jobs: Sequence[RunnerJob], runs: Sequence[GroupRun[Any]], started_ns: int) -> None:
    """Record spans and metrics for one batch; `started_ns` is the wall-clock time the batch began."""
    seen_groups: set[int] = set()
    for job, run in zip(jobs, runs, strict=True):
        received = job.received
        wait_ns = max(0, started_ns - received.time_ns)
        BATCH_WAIT_SECONDS.labels(runner=runner).observe(wait_ns / 1e9)
        sizes = {"batch_size": run.batch_size, "group_size": run.group_size}
        record_span(received, f"{runner}.batch_wait", received.time_ns, received.time_ns + wait_ns, sizes)
        for phase in run.phases:
            attributes = {**phase.attributes, **sizes, "duration_s": phase.seconds}
            record_span(received, f"{runner}.{phase.name}", phase.start_ns, phase.end_ns, attributes)
        if run.phases and id(run.phases) not in seen_groups:
            seen_groups.add(id(run.phases))
            for phase in run.phases:
                PHASE_SECONDS.labels(runner=runner, phase=phase.name).observe(phase.seconds)
