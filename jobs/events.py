"""A job's statuses as a stream: the current one at once, then each change, until the final one.

A change this process saves wakes the stream at once (Changes); one saved by another replica shows within
EVENT_POLL_S. The routes send the stream as Server-Sent Events (jobs/routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from jobs.errors import JobRefusal
from jobs.records import FINAL, JobRecord, JobStatus

EVENT_POLL_S = 0.25


class Changes:
    """How many job saves this process has made, so a stream waits for the next one instead of polling."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Condition()

    async def made(self) -> None:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()

    async def since(self, seen: int, timeout_s: float) -> None:
        """Until a save after the first `seen`, or `timeout_s` at most."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.count != seen), timeout_s)


async def statuses(
    find: Callable[[], Awaitable[JobRecord]], changes: Changes, quiet_s: float
) -> AsyncIterator[JobStatus | None]:
    """The job's status now and at every change, the final one last; None after `quiet_s` without a change (a
    stream's cue to keep its connection alive). A job that can no longer be read ends the stream."""
    loop = asyncio.get_running_loop()
    sent, sent_at = None, loop.time()
    while True:
        seen = changes.count
        try:
            status = (await find()).status
        except JobRefusal:
            return
        if status != sent:
            yield status
            sent, sent_at = status, loop.time()
        if status.state in FINAL:
            return
        await changes.since(seen, EVENT_POLL_S)
        if loop.time() - sent_at >= quiet_s:
            yield None
            sent_at = loop.time()
