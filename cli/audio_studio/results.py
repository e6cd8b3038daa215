"""Typed answers: a job's status and progress, an audio file, a critique. Each keeps the server's JSON as `raw`,
so a field this client does not know yet is still there."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from audio_studio.errors import ApiError

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
FORMAT_OF_MEDIA_TYPE = {"audio/wav": "wav", "audio/flac": "flac", "audio/mpeg": "mp3", "audio/ogg": "opus"}


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _float(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


@dataclass(frozen=True)
class Progress:
    """Where a job is: its phase, the steps or tokens done of the phase's total, the fraction of the whole job."""

    phase: str
    unit: str | None = None
    done: int = 0
    total: int = 0
    fraction: float = 0.0
    queue_position: int | None = None
    text: str | None = None  # a critique's text so far, while it is written

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Progress:
        return cls(
            phase=body["phase"], unit=body.get("unit"), done=body.get("done", 0), total=body.get("total", 0),
            fraction=body.get("fraction", 0.0), queue_position=body.get("queue_position"), text=body.get("text"),
        )  # fmt: skip

    def line(self) -> str:
        """One line for people, e.g. `denoising 12/25 48%` or `queued (2 ahead)`."""
        counts = f" {self.done}/{self.total}" if self.total else ""
        ahead = f" ({self.queue_position} ahead)" if self.queue_position else ""
        return f"{self.phase}{counts}{ahead} {self.fraction:.0%}"


@dataclass(frozen=True)
class JobStatus:
    id: str
    kind: str  # generate, transform, edit, critique
    state: str  # queued, running, succeeded, failed, cancelled
    progress: Progress
    seed: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    error: ApiError | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> JobStatus:
        error = body.get("error")
        return cls(
            id=body["id"], kind=body["kind"], state=body["state"], progress=Progress.from_json(body["progress"]),
            seed=body.get("seed"), created_at=datetime.fromisoformat(body["created_at"]),
            started_at=_time(body.get("started_at")), finished_at=_time(body.get("finished_at")),
            expires_at=_time(body.get("expires_at")),
            error=ApiError.from_body(error, body.get("error_status") or 500) if error else None, raw=body,
        )  # fmt: skip


@dataclass(frozen=True)
class Audio:
    """One audio file as the server wrote it, with the seed that makes it again."""

    data: bytes
    media_type: str
    seed: int | None
    clap_score: float | None = None
    critic_score: float | None = None
    edited: tuple[float, float] | None = None  # an edit's regenerated range, seconds into this audio

    @property
    def format(self) -> str:
        return FORMAT_OF_MEDIA_TYPE.get(self.media_type.split(";")[0].strip(), "wav")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.data)
        return path

    @classmethod
    def from_response(cls, response: httpx.Response) -> Audio:
        """A file answer (/generate, /transform, /edit, a job's result): the audio, its seed, scores and edited
        range in `X-` headers."""
        headers = response.headers
        start, end = _float(headers.get("x-edit-start")), _float(headers.get("x-edit-end"))
        return cls(
            data=response.content, media_type=headers.get("content-type", "audio/wav"),
            seed=int(headers["x-seed"]) if headers.get("x-seed") else None,
            clap_score=_float(headers.get("x-clap-score")), critic_score=_float(headers.get("x-critic-score")),
            edited=(start, end) if start is not None and end is not None else None,
        )  # fmt: skip

    @classmethod
    def candidates(cls, body: dict[str, Any]) -> list[Audio]:
        """A `/json` answer: every waveform, best first when ranked."""
        media_type = next((m for m, f in FORMAT_OF_MEDIA_TYPE.items() if f == body.get("format")), "audio/wav")
        span = body.get("edited")
        edited = (span["start_s"], span["end_s"]) if span else None
        return [cls.of_waveform(waveform, media_type, edited) for waveform in body["waveforms"]]

    @classmethod
    def of_waveform(cls, waveform: dict[str, Any], media_type: str, edited: tuple[float, float] | None = None) -> Audio:
        return cls(
            data=base64.b64decode(waveform["audio_base64"]), media_type=media_type, seed=waveform.get("seed"),
            clap_score=_float(waveform.get("clap_score")), critic_score=_float(waveform.get("critic_score")),
            edited=edited,
        )  # fmt: skip


@dataclass(frozen=True)
class Critique:
    text: str
    structured: dict[str, Any] | None
    seed: int
    tokens_generated: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Critique:
        return cls(
            text=body["text"], structured=body.get("structured"), seed=body["seed"],
            tokens_generated=body.get("tokens_generated", 0), raw=body,
        )  # fmt: skip
