"""A checked request, ready to run on its runner: the synchronous routes run it at once, the job API later.

Everything a request needs from its body (validation, decoded uploads, the seed) is settled before a Work
exists, so a job fails validation at submission exactly as the synchronous route would, and both run the
same runner call and render the same answer. A job keeps that answer as a Reply (plain data) to give it back later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from core.runner_calls import run_job
from schemas import ProgressPhase, RunnerJob, RunnerProgress

Answer = Response | BaseModel  # an audio file, an error answer, or a JSON model BentoML serialises
RunnerCall = Callable[[list[Any]], Awaitable[list[Any]]]  # a runner's batchable API
ProgressCall = Callable[[list[str]], Awaitable[list[RunnerProgress]]]  # a runner's `progress` API


@dataclass
class ProgressTarget:
    """Which runner job a job's progress follows, on which runner, and the part of the 0-1 scale it fills.

    Work of several runner calls moves it from stage to stage (front/studio.py), so progress keeps moving. A stage
    may name the phase the job reads while it runs, whatever the followed runner job's own: the critic's rows
    ranking a generation are `ranking`, not `queued` while they wait for their batch. `answer`: the followed runner
    job writes the answer's text, so its text so far is the job's (a critique's summarising pass, not its segments).
    """

    job_id: str
    runner: str
    progress: ProgressCall
    span: tuple[float, float] = (0.0, 1.0)
    phase: ProgressPhase | None = None
    answer: bool = True

    def move(
        self,
        job_id: str,
        runner: str,
        progress: ProgressCall,
        span: tuple[float, float],
        phase: ProgressPhase | None = None,
        answer: bool = True,
    ) -> None:
        self.job_id, self.runner, self.progress, self.span = job_id, runner, progress, span
        self.phase, self.answer = phase, answer

    def renamed(self, new_ids: dict[str, str]) -> None:
        """The runner job followed was sent again under a new id (core/runner_calls.py): follow the new attempt."""
        self.job_id = new_ids.get(self.job_id, self.job_id)


@dataclass(frozen=True)
class Reply:
    """An answer as plain data: what the job API keeps and answers later, as the synchronous route would have."""

    status: int
    body: bytes
    media_type: str
    headers: dict[str, str]  # the answer's own (provenance, Content-Disposition), not its length or type

    @classmethod
    def of(cls, answer: Answer) -> Reply:
        if isinstance(answer, BaseModel):  # what BentoML would serialise
            return cls(200, answer.model_dump_json().encode(), "application/json", {})
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-type")}
        media_type = answer.media_type or answer.headers.get("content-type", "application/octet-stream")
        return cls(answer.status_code, bytes(answer.body), media_type, headers)


@dataclass(frozen=True)
class Work:
    kind: str  # the public API: generate, transform or critique
    runner: str  # audioldm2 or music-flamingo
    job: RunnerJob
    submit: RunnerCall
    cancel: Callable[[list[str]], Awaitable[None]]
    progress: ProgressCall
    render: Callable[[Any], Answer]  # the runner's outcome as the public answer
    seed: int | None = None
    input_bytes: int = 0  # the decoded uploads it holds until it ends: a job counts them against the queue's cap
    # Work of several runner calls (segments, critic ranking; front/studio.py) and the job its progress follows.
    execute: Callable[[], Awaitable[Any]] | None = None
    target: ProgressTarget | None = None

    def __post_init__(self) -> None:
        if self.target is None:  # one runner call: its job is the one followed
            object.__setattr__(self, "target", ProgressTarget(self.job.job_id, self.runner, self.progress))

    def followed(self) -> ProgressTarget:
        assert self.target is not None
        return self.target

    async def run(self) -> Answer:
        if self.execute is not None:
            return self.render(await self.execute())
        outcome = await run_job(self.runner, self.submit, self.cancel, self.job, self.followed().renamed)
        return self.render(outcome)

    async def reply(self) -> Reply:
        return Reply.of(await self.run())
