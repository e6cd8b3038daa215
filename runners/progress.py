"""Per-job progress as a runner knows it: written by the model thread, read by the `progress` API.

The front's job API asks for it while a job runs (jobs/manager.py). A job the board has not seen yet is
still in BentoML's batcher queue; a finished one is remembered for a while so a last read still finds it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from schemas import ProgressPhase, RunnerProgress

# Engine phase names (models/phases.py) as job progress phases; the others (denoise, prefill, decode) are set
# where their steps or tokens are counted.
ENGINE_PHASES: dict[str, ProgressPhase] = {
    "encode": "encoding",
    "encode_audio": "encoding",
    "decode": "decoding",
    "rank": "ranking",
}
REMEMBERED = 10_000


class ProgressBoard:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._jobs: OrderedDict[str, RunnerProgress] = OrderedDict()
        self._lock = threading.Lock()
        self.remembered = remembered

    def set(self, job_id: str, phase: ProgressPhase, done: int = 0, total: int = 0) -> None:
        with self._lock:
            self._jobs[job_id] = RunnerProgress(job_id=job_id, phase=phase, done=done, total=total)
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > self.remembered:
                self._jobs.popitem(last=False)

    def engine_phase(self, job_id: str, name: str) -> None:
        """A `models.phases.watch` callback: the engine began phase `name` for this job."""
        if name in ENGINE_PHASES:
            self.set(job_id, ENGINE_PHASES[name])

    def read(self, job_ids: list[str]) -> list[RunnerProgress]:
        with self._lock:
            return [self._jobs.get(job_id) or RunnerProgress(job_id=job_id, phase="queued") for job_id in job_ids]
