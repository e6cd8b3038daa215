"""What a job is, in the store and on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from front.errors import ErrorResponse
from schemas import ProgressPhase

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["generate", "transform", "critique"]
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

# Where each phase starts and ends on the 0-1 progress scale; steps or tokens fill the span of their phase.
PHASE_SPANS: dict[str, tuple[float, float]] = {
    "queued": (0.0, 0.0),
    "encoding": (0.02, 0.05),
    "prefill": (0.02, 0.05),
    "denoising": (0.05, 0.9),
    "decoding": (0.9, 0.97),  # AudioLDM2's VAE + vocoder; Music Flamingo's tokens span it from 0.05 (below)
    "ranking": (0.97, 0.99),
    "finished": (1.0, 1.0),
}


def now() -> datetime:
    return datetime.now(UTC)


class JobProgress(BaseModel):
    phase: ProgressPhase = Field(
        description="queued; encoding, denoising, decoding, ranking (generate, transform); prefill, decoding "
        "(critique); finished"
    )
    unit: Literal["steps", "tokens"] | None = Field(None, description="What `done` and `total` count.")
    done: int = Field(0, ge=0, description="Denoising steps or tokens done in this phase.")
    total: int = Field(0, ge=0, description="Denoising steps or token budget of this phase.")
    fraction: float = Field(0.0, ge=0.0, le=1.0, description="Of the whole job, never decreasing.")
    queue_position: int | None = Field(
        None,
        ge=0,
        description="While queued: jobs ahead of this one in the front's job queue (0: sent to the runner, "
        "waiting for a batch).",
    )


class JobLinks(BaseModel):
    status: str
    events: str = Field(description="Server-Sent Events: one `status` event per change, the last one final.")
    result: str
    cancel: str


class JobStatus(BaseModel):
    """A job as GET /jobs/{job_id} shows it (also the body of the 202 that accepts it)."""

    id: str
    kind: JobKind
    state: JobState
    progress: JobProgress
    seed: int | None = Field(None, description="The seed the job runs with (drawn at submission if not given).")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(None, description="After this the result is gone (410).")
    error: ErrorResponse | None = Field(None, description="Why it failed: the synchronous API's error body.")
    error_status: int | None = Field(None, description="The HTTP status the synchronous API would have answered.")
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
    result: ResultInfo | None = None
    purge_at: datetime | None = None  # when the record itself goes (after the result, 404 instead of 410)

    @property
    def id(self) -> str:
        return self.status.id

    @property
    def active(self) -> bool:
        return self.status.state in ACTIVE
