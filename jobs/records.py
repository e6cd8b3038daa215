"""What a job is, in the store and on the wire, and how its record ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from core.errors import STATUS_OF_KIND, ErrorKind, ErrorResponse
from schemas import ProgressPhase, ProgressUnit
from settings import SETTINGS

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["generate", "transform", "edit", "critique"]
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
STALE_S = SETTINGS.job_stale_s  # an active job whose heartbeat is older belongs to a process that died
PURGE_AFTER = timedelta(days=7)  # after the result's retention the record says 410 this long, then 404
Failure = tuple[ErrorResponse, int]  # a failed job's error: the body and status the synchronous API would answer


def now() -> datetime:
    return datetime.now(UTC)


class JobProgress(BaseModel):
    phase: ProgressPhase = Field(
        description="queued; encoding, denoising, decoding, ranking (generate, transform, edit); prefill, decoding "
        "(critique); finished"
    )
    unit: ProgressUnit | None = Field(None, description="What `done` and `total` count.")
    done: int = Field(0, ge=0, description="Denoising steps or tokens done in this phase.")
    total: int = Field(0, ge=0, description="Denoising steps or token budget of this phase.")
    fraction: float = Field(0.0, ge=0.0, le=1.0, description="Of the whole job, never decreasing.")
    queue_position: int | None = Field(
        None,
        ge=0,
        description="While queued: jobs ahead of this one in the front's job queue (0: sent to the runner, "
        "waiting for a batch).",
    )
    text: str | None = Field(
        None,
        description="A critique while it decodes: the text written so far, a prefix of the result's text (with "
        "`output: json`, of the JSON as decoded; with `long_audio: segments`, of the summarising pass). Absent "
        "otherwise.",
    )


class JobLinks(BaseModel):
    status: str
    events: str = Field(description="Server-Sent Events: one `status` event per change, the last one final.")
    result: str
    cancel: str


WebhookEvent = Literal["start", "progress", "completed"]
WEBHOOK_ATTEMPTS_SHOWN = 20


class WebhookAttempt(BaseModel):
    """One try to deliver one event."""

    event: WebhookEvent
    webhook_id: str = Field(description="The `webhook-id` header: the same on every try of one event.")
    attempt: int = Field(ge=1, description="Which try of this event.")
    at: datetime
    status_code: int | None = Field(None, description="The receiver's HTTP status; absent when none came.")
    error: str | None = Field(None, description="Why no answer came (refused destination, timeout, connection).")
    delivered: bool = Field(description="A 2xx answer: the event is delivered.")
    next_attempt_at: datetime | None = Field(
        None, description="When it is tried again; absent once delivered or given up."
    )


class JobWebhook(BaseModel):
    """Where the job's events go, and how their deliveries went."""

    url: str
    events: list[WebhookEvent]
    attempts: list[WebhookAttempt] = Field(
        [], description=f"The latest {WEBHOOK_ATTEMPTS_SHOWN} delivery attempts, oldest first."
    )


class JobStatus(BaseModel):
    """A job as GET /jobs/{job_id} shows it (also the body of the 202 that accepts it)."""

    id: str
    kind: JobKind
    state: JobState
    progress: JobProgress
    seed: int | None = Field(None, description="The seed the job runs with (drawn at submission if not given).")
    attempt: int = Field(
        1,
        ge=1,
        description="Which run of the job this is: a job stopped by a restart of the service runs again from its "
        "accepted request when the service is back, with the same seed, up to AUDIO_STUDIO_JOB_MAX_ATTEMPTS runs.",
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(None, description="After this the result is gone (410).")
    error: ErrorResponse | None = Field(None, description="Why it failed: the synchronous API's error body.")
    error_status: int | None = Field(None, description="The HTTP status the synchronous API would have answered.")
    webhook: JobWebhook | None = Field(None, description="The job's webhook, when it names one (docs/webhooks.md).")
    links: JobLinks


class ResultInfo(BaseModel):
    """How the stored result is answered: the synchronous API's media type and headers."""

    media_type: str
    headers: dict[str, str] = {}
    size: int = 0


class JobRecord(BaseModel):
    """A job as the store keeps it: the public status plus who owns and runs it."""

    status: JobStatus
    caller: str = Field(description="The API key's name that submitted it ('anonymous' without keys).")
    instance: str = Field(description="The front process running it (its heartbeat keeps it alive).")
    runner: str
    heartbeat_at: datetime
    input_bytes: int = Field(0, description="Decoded uploads the job holds in the front until it ends (jobs/caps.py).")
    result: ResultInfo | None = None
    purge_at: datetime | None = None  # when the record itself goes (after the result, 404 instead of 410)

    @property
    def id(self) -> str:
        return self.status.id

    @property
    def active(self) -> bool:
        return self.status.state in ACTIVE

    @property
    def stale(self) -> bool:
        """Active, but its owner stopped refreshing the heartbeat: that process died."""
        return self.active and self.heartbeat_at < fresh_since()


def fresh_since() -> datetime:
    """The oldest heartbeat of a process still alive."""
    return now() - timedelta(seconds=STALE_S)


def links(job_id: str) -> JobLinks:
    base = f"/jobs/{job_id}"
    return JobLinks(status=base, events=f"{base}/events", result=f"{base}/result", cancel=f"{base}/cancel")


def failure(kind: ErrorKind, message: str) -> Failure:
    return ErrorResponse(error=message, kind=kind), STATUS_OF_KIND[kind]


def ended(record: JobRecord, state: JobState, error: Failure | None = None, retention_s: int = 0) -> JobRecord:
    """`record` in its final `state`, finished now: with its error, or a succeeded job's result kept `retention_s`."""
    finished = now()
    update: dict[str, object] = {"state": state, "finished_at": finished}
    if state == "succeeded":
        update["progress"] = JobProgress(phase="finished", fraction=1.0)
        update["expires_at"] = finished + timedelta(seconds=retention_s)
    if error is not None:
        update["error"], update["error_status"] = error
    status = record.status.model_copy(update=update)
    return record.model_copy(update={"status": status, "purge_at": (status.expires_at or finished) + PURGE_AFTER})
