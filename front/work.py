"""A checked request, ready to run on its runner: the synchronous routes run it at once, the job API later.

Everything a request needs from its body (validation, decoded uploads, the seed) is settled before a Work
exists, so a job fails validation at submission exactly as the synchronous route would, and both run the
same runner call and render the same answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from front.runner_calls import run_job
from schemas import RunnerJob, RunnerProgress

Answer = Response | BaseModel  # an audio file, an error answer, or a JSON model BentoML serialises
RunnerCall = Callable[[list[Any]], Awaitable[list[Any]]]  # a runner's batchable API
ProgressCall = Callable[[list[str]], Awaitable[list[RunnerProgress]]]  # a runner's `progress` API


@dataclass
class ProgressTarget:
    """Which runner job a job's progress follows, on which runner, and the part of the 0-1 scale it fills.

    Work of several runner calls moves it from stage to stage (front/studio.py), so progress keeps moving.
    """

    job_id: str
    runner: str
    progress: ProgressCall
    span: tuple[float, float] = (0.0, 1.0)

    def move(self, job_id: str, runner: str, progress: ProgressCall, span: tuple[float, float]) -> None:
        self.job_id, self.runner, self.progress, self.span = job_id, runner, progress, span


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
    # Work of several runner calls (segments, critic ranking; front/studio.py) and the job its progress follows.
    execute: Callable[[], Awaitable[Any]] | None = None
    target: ProgressTarget | None = None

    def followed(self) -> ProgressTarget:
        return self.target or ProgressTarget(self.job.job_id, self.runner, self.progress)

    async def run(self) -> Answer:
        if self.execute is not None:
            return self.render(await self.execute())
        return self.render(await run_job(self.runner, self.submit, self.cancel, self.job))
