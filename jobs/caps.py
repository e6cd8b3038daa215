"""The caps on active (queued or running) jobs, counted over every replica by the store: in all, and per API key."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.errors import JobsBusy
from jobs.records import fresh_since
from jobs.store import JobStore

QUEUE_FULL_RETRY_S = 10


@dataclass(frozen=True)
class JobCaps:
    store: JobStore
    max_active: int
    max_active_per_key: int

    async def admit(self, caller: str | None) -> None:
        """Raise JobsBusy when the queue is full, or when `caller` (None: API keys are off) has its share."""
        fresh = fresh_since()  # a dead process's jobs hold no place
        active = await self.store.count_active(fresh)
        if active >= self.max_active:
            raise JobsBusy(f"the job queue holds {active} jobs; its limit is {self.max_active}", QUEUE_FULL_RETRY_S)
        if caller is not None:
            own = await self.store.count_active(fresh, caller)
            if own >= self.max_active_per_key:
                raise JobsBusy(
                    f"this API key has {own} jobs queued or running; its limit is {self.max_active_per_key}",
                    QUEUE_FULL_RETRY_S,
                )
