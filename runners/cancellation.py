"""Jobs whose client has gone (or all of them, when the runner shuts down), as a runner knows them.

The front cannot take a job back out of BentoML's adaptive batcher (it has no
API to remove a queued item) nor interrupt a batch already running. So it
tells the runner (`cancel` API, served on the event loop while the model
thread works) and the runner checks here: AudioLDM2 jobs leave at the next
step boundary (runners/step_scheduler.py); a Music Flamingo job is dropped
when its batch starts, or its row is finished at the next token.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from prometheus_client import Counter

from schemas import JobError

# Long enough for a job to leave the longest queue (the batchers' max latency is 10 minutes by default).
REMEMBER_S = 3600.0
MAX_REMEMBERED = 100_000


JOBS_CANCELLED = Counter(
    "audio_studio_jobs_cancelled",
    "Jobs a runner dropped because their client left: stage=queued (never ran) or running (stopped mid-way)",
    ["runner", "stage"],
)


# The front answers a live client these as 503 (front/rendering.py): only a shutdown cancels a job whose client stays.
CANCELLED_WHILE_QUEUED = JobError(
    kind="cancelled", message="cancelled before it ran: its client left, or the runner is shutting down"
)
CANCELLED_WHILE_RUNNING = JobError(
    kind="cancelled", message="cancelled while running: its client left, or the runner is shutting down"
)


def count_cancelled(runner: str, errors: Iterable[JobError | None]) -> None:
    """Count the cancelled jobs among a batch's per-job errors, by stage."""
    for error in errors:
        if error == CANCELLED_WHILE_QUEUED:
            JOBS_CANCELLED.labels(runner=runner, stage="queued").inc()
        elif error == CANCELLED_WHILE_RUNNING:
            JOBS_CANCELLED.labels(runner=runner, stage="running").inc()


class CancelledJobs:
    """A bounded, thread-safe set of cancelled job ids (the event loop adds, the model thread reads)."""

    def __init__(self, remember_s: float = REMEMBER_S, max_remembered: int = MAX_REMEMBERED) -> None:
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._everything = False  # the runner is shutting down (runners/shutdown.py)
        self._lock = threading.Lock()
        self.remember_s, self.max_remembered = remember_s, max_remembered

    def add(self, job_ids: Iterable[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for job_id in job_ids:
                self._ids[job_id] = now
                self._ids.move_to_end(job_id)
            while self._ids and (
                len(self._ids) > self.max_remembered or next(iter(self._ids.values())) < now - self.remember_s
            ):
                self._ids.popitem(last=False)

    def everything(self) -> None:
        """From now on every job is cancelled: the queued and running ones, and any that still arrives."""
        self._everything = True

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            return self._everything or job_id in self._ids
