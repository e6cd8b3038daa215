"""A runner's room in one front process, shared by its synchronous requests and its jobs.

The runner's batcher holds one batch running and the rest waiting; its room is a full batch plus `max_queued`
waiting. A synchronous request takes a place once its body is in, or is refused at once when the room is full
(front/admission.py); a job takes a place when it starts and waits for one otherwise (jobs/running.py). Jobs may
hold at most a batch's worth of places, so synchronous callers always find the queued places free of jobs.

Counted per front process: in the default topology each replica runs its own runners. Fronts that share runners
by URL each count their own requests (docs/configuration.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from prometheus_client import Gauge

OUTSTANDING = Gauge(
    "audio_studio_runner_outstanding",
    "Requests and jobs this front has let in for a runner and not yet answered (waiting for a batch or in one)",
    ["runner"],
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "audio_studio_runner_queue_depth",
    "Requests for a runner beyond one full batch: they wait in its batcher (exact when the runner is busy)",
    ["runner"],
    multiprocess_mode="livesum",
)


@dataclass
class RunnerRoom:
    """One runner's room in this front: a full batch plus `max_queued` waiting, requests and jobs together."""

    name: str
    max_batch_size: int
    max_queued: int
    outstanding: int = 0
    jobs: int = 0  # of `outstanding`: this front's jobs on the runner
    _freed: list[asyncio.Future[None]] = field(default_factory=list, repr=False)

    @property
    def full(self) -> bool:
        return self.outstanding >= self.max_batch_size + self.max_queued

    def change(self, delta: int) -> None:
        """A synchronous request takes (+1) or gives back (-1) a place."""
        self.outstanding += delta
        OUTSTANDING.labels(runner=self.name).set(self.outstanding)
        QUEUE_DEPTH.labels(runner=self.name).set(max(0, self.outstanding - self.max_batch_size))
        if delta < 0:
            for waiter in self._freed:
                if not waiter.done():
                    waiter.set_result(None)

    @asynccontextmanager
    async def job_place(self) -> AsyncIterator[None]:
        """Hold a place for a job while it runs, once the room has one and jobs hold less than a batch."""
        while self.full or self.jobs >= self.max_batch_size:
            freed = asyncio.get_running_loop().create_future()
            self._freed.append(freed)
            try:
                await freed
            finally:
                self._freed.remove(freed)
        self.jobs += 1
        self.change(+1)
        try:
            yield
        finally:
            self.jobs -= 1
            self.change(-1)
