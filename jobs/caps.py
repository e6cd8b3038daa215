"""The caps on active (queued or running) jobs, counted over every replica: their number in all and per API key,
and the bytes of decoded uploads they hold in the front until they end.

The store checks them and saves a new job in one atomic step (`JobStore.reserve`: one SQLite transaction, one
Redis script), so concurrent submissions never pass a cap between a count and a save.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jobs.errors import JobsBusy

QUEUE_FULL_RETRY_S = 10
Cap = Literal["active", "key", "bytes"]


@dataclass(frozen=True)
class JobCaps:
    max_active: int
    max_active_per_key: int | None  # None: API keys are off, every caller shares the queue
    max_input_bytes: int


@dataclass(frozen=True)
class Full:
    """The cap a submission met, and what the store held against it."""

    cap: Cap
    held: int

    def refusal(self, caps: JobCaps, input_bytes: int) -> JobsBusy:
        if self.cap == "active":
            message = f"the job queue holds {self.held} jobs; its limit is {caps.max_active}"
        elif self.cap == "key":
            message = f"this API key has {self.held} jobs queued or running; its limit is {caps.max_active_per_key}"
        else:
            message = (
                f"the job queue holds {mebibytes(self.held)} of decoded uploads; with this job's "
                f"{mebibytes(input_bytes)} that passes its limit of {mebibytes(caps.max_input_bytes)}"
            )
        return JobsBusy(message, QUEUE_FULL_RETRY_S)


def first_full(caps: JobCaps, active: int, own: int, held_bytes: int, input_bytes: int) -> Full | None:
    """The first cap a new job of `input_bytes` does not fit under, given what the store holds (None: it fits).

    A job fits the byte cap alone whatever its size, so an upload under the route's limit is never refused forever.
    jobs/redis_store.py's script applies the same rule.
    """
    if active >= caps.max_active:
        return Full("active", active)
    if caps.max_active_per_key is not None and own >= caps.max_active_per_key:
        return Full("key", own)
    if held_bytes > 0 and held_bytes + input_bytes > caps.max_input_bytes:
        return Full("bytes", held_bytes)
    return None


def mebibytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
