"""What the job API refuses, as exceptions: the manager raises them, and the routes answer each in the one
error shape (jobs/routes.py), so the job API itself knows no HTTP."""

from __future__ import annotations

from typing import ClassVar

from core.errors import ErrorKind


class JobRefusal(Exception):
    kind: ClassVar[ErrorKind]
    retry_after_s: int | None = None  # when the caller may try again, if the refusal knows better than its kind
    field: str | None = None  # the request's field at fault, if one is


class JobNotFound(JobRefusal):
    """No such job, or not one this caller submitted."""

    kind = "not_found"


class JobGone(JobRefusal):
    """The job's result passed its retention time."""

    kind = "gone"


class JobConflict(JobRefusal):
    """The job has no result: still active, failed or cancelled."""

    kind = "conflict"


class JobsBusy(JobRefusal):
    """The job queue, or this caller's share of it, is full."""

    kind = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreUnavailable(JobRefusal):
    """The job store cannot be reached: retry later."""

    kind = "unavailable"


class WebhookRefused(JobRefusal):
    """The submission's webhook may not be used: not allowed, a private address, or no signing secret."""

    kind = "invalid_input"
    field = "webhook"
