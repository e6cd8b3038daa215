"""Per-job progress as a runner knows it: written by the model thread, read by the `progress` API.

The front's job API asks for it while a job runs (jobs/progress.py). A job the board has not seen yet is
still in BentoML's batcher queue; a finished one is remembered for a while so a last read still finds it.
Each runner places its jobs on the 0-1 scale itself (a PhaseScale), since only it knows its model's phases and
what they cost: the job API knows no model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas import ProgressPhase, ProgressUnit, RunnerProgress

Span = tuple[float, float]

# Engine phase names (models/phases.py) as job progress phases; the others (denoise, prefill, decode) are set
# where their steps or tokens are counted.
ENGINE_PHASES: dict[str, ProgressPhase] = {
    "encode": "encoding",
    "encode_audio": "encoding",
    "decode": "decoding",
    "rank": "ranking",
}
ENDS: dict[ProgressPhase, Span] = {"queued": (0.0, 0.0), "finished": (1.0, 1.0)}
REMEMBERED = 10_000


@dataclass(frozen=True)
class PhaseScale:
    """Where each of a runner's phases starts and ends on its jobs' 0-1 scale (steps or tokens fill the span of
    their phase), and what each phase counts. A phase the scale does not place counts as not started."""

    spans: Mapping[ProgressPhase, Span]
    units: Mapping[ProgressPhase, ProgressUnit] = field(default_factory=dict)

    def place(
        self, job_id: str, phase: ProgressPhase, done: int = 0, total: int = 0, text: str | None = None
    ) -> RunnerProgress:
        low, high = ENDS.get(phase) or self.spans.get(phase, (0.0, 0.0))
        share = done / total if total else 0.0
        fraction = min(1.0, low + (high - low) * share)
        return RunnerProgress(
            job_id=job_id, phase=phase, unit=self.units.get(phase), done=done, total=total, fraction=fraction, text=text
        )


# The diffusion runners (AudioLDM2, AudioLDM): the encoding of the prompt or clip, the denoising steps (most of
# the time), the VAE and vocoder, then CLAP ranking of the candidates. AudioLDM2 counts the pieces its encoding and
# decoding run in (many for a long clip, runners/step_scheduler.py).
DIFFUSION_PHASES = PhaseScale(
    {"encoding": (0.02, 0.05), "denoising": (0.05, 0.9), "decoding": (0.9, 0.97), "ranking": (0.97, 0.99)},
    {"encoding": "pieces", "denoising": "steps", "decoding": "pieces"},
)
# Music Flamingo: the prefill (audio and prompt in one pass), then one token at a time up to the token budget.
DECODER_PHASES = PhaseScale({"prefill": (0.02, 0.05), "decoding": (0.05, 1.0)}, {"decoding": "tokens"})


class ProgressBoard:
    def __init__(self, scale: PhaseScale = DIFFUSION_PHASES, remembered: int = REMEMBERED) -> None:
        self._jobs: OrderedDict[str, RunnerProgress] = OrderedDict()
        self._lock = threading.Lock()
        self.scale = scale
        self.remembered = remembered

    def set(self, job_id: str, phase: ProgressPhase, done: int = 0, total: int = 0, text: str | None = None) -> None:
        """`text`: what a decoding job has written so far (a finished job's answer is in its outcome, not here)."""
        with self._lock:
            self._jobs[job_id] = self.scale.place(job_id, phase, done, total, text)
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > self.remembered:
                self._jobs.popitem(last=False)

    def engine_phase(self, job_id: str, name: str) -> None:
        """A `models.phases.watch` callback: the engine began phase `name` for this job. A phase already posted
        keeps its counts (the step scheduler counts the pieces of encoding and decoding)."""
        phase = ENGINE_PHASES.get(name)
        if phase is None:
            return
        with self._lock:
            current = self._jobs.get(job_id)
        if current is None or current.phase != phase:
            self.set(job_id, phase)

    def read(self, job_ids: list[str]) -> list[RunnerProgress]:
        with self._lock:
            return [self._jobs.get(job_id) or self.scale.place(job_id, "queued") for job_id in job_ids]
