"""AudioLDM2 jobs run in-process the way the runner serves them, for tests and benchmarks.

The runner (runners/audioldm2.py) hands each intake batch to its StepScheduler, which runs it on the model
thread, and awaits one GroupRun per job. This does the same, blocking instead of awaiting, so what the tests
check and the benchmarks time is the served loop: there is no second AudioLDM2 batching loop to drift from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from models.audioldm2 import AudioLDM2Engine, JobAudio
from runners.batching import GroupRun
from runners.cancellation import CancelledJobs
from runners.model_thread import ModelThread
from runners.progress import ProgressBoard
from runners.step_scheduler import Start, StepScheduler
from schemas import EditJob, GenerationJob, RunnerJob, TransformJob


class InProcessScheduler:
    def __init__(self, engine: AudioLDM2Engine, thread: ModelThread | None = None, share_passes: bool = True) -> None:
        """`thread`: the one that loaded `engine`, as in the runner (default: a new one); free again after `close`."""
        self.engine = engine
        self.cancelled = CancelledJobs()
        self.board = ProgressBoard()
        thread = thread or ModelThread("audioldm2-in-process")
        self.scheduler = StepScheduler(engine, self.cancelled, thread, share_passes=share_passes, board=self.board)

    def generate(self, jobs: Sequence[GenerationJob]) -> list[GroupRun[JobAudio]]:
        return self.run(jobs, self.engine.start_generation)  # type: ignore[arg-type]

    def transform(self, jobs: Sequence[TransformJob]) -> list[GroupRun[JobAudio]]:
        return self.run(jobs, self.engine.start_transform)  # type: ignore[arg-type]

    def edit(self, jobs: Sequence[EditJob]) -> list[GroupRun[JobAudio]]:
        return self.run(jobs, self.engine.start_edit)  # type: ignore[arg-type]

    def run(self, jobs: Sequence[RunnerJob], start: Start) -> list[GroupRun[JobAudio]]:
        """`jobs` as one intake batch (they share passes as a runner batch does); each job's answer, in order."""
        return [future.result() for future in self.scheduler.submit(list(jobs), start)]

    def close(self) -> None:
        self.scheduler.close()

    def __enter__(self) -> InProcessScheduler:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
