"""Iteration-level scheduling for AudioLDM2: jobs advance by denoising steps on one model thread, new jobs join
at step boundaries, and a short job is not held behind a long one.

BentoML's adaptive batcher stays the intake: each batch it forms is handed to this scheduler, which owns the
model. Every iteration runs one UNet pass, chosen least-attained-service first (the job that has had the
least model time leads; jobs with windows of its size fill the pass up to `max_rows` rows, in the same
order). A 2-second request arriving during a 10-minute render therefore runs its steps next, and the render
resumes in between: the technique LLM servers use for decoding, with the model time a job has had as its
priority so long work cannot starve short work, and the intake's queue caps bound the opposite.

A job's start and its decoding are work in pieces (models/pieces.py): one piece up to the single-latent length,
many for a long clip's encoding (a transform) or decoding, in tiles. An iteration runs one piece instead of a
pass when the least served job is starting or decoding, so a 10-minute clip's encoding or decoding takes its
turns as a render's steps do. One exception to that order: a job whose next piece is its last runs it first, so
it is answered and its client's next request can join the passes (`_priority`).

Per job: cancelled jobs leave at the next step boundary or between two pieces; a pass that fails is run again
one job at a time, so only the job at fault fails; a decoded job is answered at once. Each job's phase and steps
or pieces done are posted on a progress board (runners/progress.py) for the job API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from models.audioldm2 import AudioLDM2Engine, Denoising, JobAudio
from models.phases import Phase, collect, watch
from models.pieces import Pieces
from runners.batching import OUT_OF_MEMORY_ALONE, GroupRun
from runners.cancellation import CANCELLED_WHILE_QUEUED, CANCELLED_WHILE_RUNNING, CancelledJobs
from runners.model_thread import ModelThread
from runners.progress import ProgressBoard
from schemas import JobError, ProgressPhase, RunnerJob

logger = logging.getLogger("bentoml.audio_studio")

Start = Callable[[RunnerJob], Pieces[Denoising]]
T = TypeVar("T")


@dataclass(eq=False)
class Entry:
    """One job from intake to answer."""

    job: RunnerJob
    start: Start
    batch_size: int  # jobs in the intake batch it came with
    future: Future[GroupRun[JobAudio]] = field(default_factory=Future)
    preparing: Pieces[Denoising] | None = None  # its start, until the last piece has run
    state: Denoising | None = None
    decoding: Pieces[JobAudio] | None = None  # once denoised
    phases: list[Phase] = field(default_factory=list)
    attained_s: float = 0.0  # model time spent on it so far: its priority (least first)
    started_ns: int = 0
    denoise_started_ns: int = 0
    passes: int = 0
    most_jobs_in_a_pass: int = 0  # 0: never reached the model

    @property
    def denoising(self) -> bool:
        return self.state is not None and self.decoding is None

    def answer(self, output: JobAudio | None, error: JobError | None, board: ProgressBoard) -> None:
        board.set(self.job.job_id, "finished")
        run = GroupRun(output, error, self.batch_size, self.most_jobs_in_a_pass, self.attained_s, tuple(self.phases))
        if not self.future.done():
            self.future.set_result(run)


class StepScheduler:
    def __init__(
        self,
        engine: AudioLDM2Engine,
        cancelled: CancelledJobs,
        thread: ModelThread,
        share_passes: bool = True,
        board: ProgressBoard | None = None,
    ) -> None:
        """`thread`: the thread that loaded `engine`; this scheduler's loop takes it over."""
        self.engine = engine
        self.board = board or ProgressBoard()
        self.cancelled = cancelled
        self.share_passes = share_passes
        self.waiting: list[Entry] = []
        self.active: list[Entry] = []
        self._wake = threading.Condition()
        self._closed = False
        self._looping = thread.submit(self._loop)

    # ---- intake (any thread) ---------------------------------------------------------

    def submit(self, jobs: list[RunnerJob], start: Start) -> list[Future[GroupRun[JobAudio]]]:
        entries = [Entry(job, start, len(jobs)) for job in jobs]
        with self._wake:
            self.waiting.extend(entries)
            self._wake.notify()
        return [entry.future for entry in entries]

    def close(self) -> None:
        """End the loop once every job is answered, so the thread is free and the engine can be freed.

        The runner's scheduler lives as long as its process; tests and benchmarks that build one engine after
        another close theirs (runners/audioldm2_in_process.py).
        """
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._looping.result()

    # ---- the model thread -------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self.waiting and not self.active and not self._closed:
                    self._wake.wait()
                if not self.waiting and not self.active:
                    return  # closed
                arrived, self.waiting = self.waiting, []
            try:
                self.iteration(arrived)
            except Exception:  # the loop must outlive any one failure; the jobs involved are answered
                logger.exception("step scheduler iteration failed")
                for entry in arrived + self.active:
                    entry.answer(None, JobError(kind="internal", message="the model thread failed; retry"), self.board)
                self.active = []

    def iteration(self, arrived: list[Entry]) -> None:
        """Admit arrivals, drop the cancelled, run one piece or UNet pass, answer what is decoded."""
        for entry in arrived:
            self._admit(entry)
        for entry in list(self.active):
            if entry.job.job_id in self.cancelled:
                self._leave(entry, CANCELLED_WHILE_RUNNING)
        live = sorted(self.active, key=self._priority)
        if not live:
            return
        leader = live[0]
        if leader.preparing is not None:
            state = self._piece(leader, leader.preparing, "encoding")
            if state is not None:
                leader.preparing, leader.state = None, state
                self.board.set(leader.job.job_id, "denoising", 0, len(state.timesteps))
        elif leader.decoding is not None:
            audio = self._piece(leader, leader.decoding, "decoding")
            if audio is not None:
                self.active.remove(leader)
                leader.answer(audio, None, self.board)
        else:
            self._run_pass(self._next_pass(live))
        for entry in self.active:
            if entry.denoising and entry.state.done:  # type: ignore[union-attr]
                self._denoised(entry)

    @staticmethod
    def _priority(entry: Entry) -> tuple[bool, float]:
        """Least attained service first, except that a job one piece from its answer (the last piece of its
        decoding) runs that piece first: least-served order put it behind every newer job, since it has had the most
        service, and under load jobs piled up denoised but not decoded, holding their clients' slots while fewer
        jobs denoised together (in-process, 8 closed-loop clients: passes of 1.8 jobs and 63-79% of the batch
        ceiling's rate, against 3.6 and 96-97%: bench/step_scheduler_load.py). Such a piece is at most one
        single-latent decode, so a short job arriving meanwhile is not held long."""
        decoding = entry.decoding
        return (not (decoding is not None and decoding.total - decoding.done == 1), entry.attained_s)

    def _admit(self, entry: Entry) -> None:
        """Plan the job's start (no model work yet: its pieces take their turns from the next iteration)."""
        if entry.job.job_id in self.cancelled:
            return entry.answer(None, CANCELLED_WHILE_QUEUED, self.board)
        entry.started_ns = time.time_ns()
        try:
            entry.preparing = entry.start(entry.job)
        except Exception as exc:
            return entry.answer(None, self._fault(exc), self.board)
        self.active.append(entry)

    def _leave(self, entry: Entry, error: JobError) -> None:
        self.active.remove(entry)
        for plan in (entry.preparing, entry.decoding):
            if plan is not None:
                plan.close()
        entry.answer(None, error, self.board)

    def _piece(self, entry: Entry, plan: Pieces[T], phase: ProgressPhase) -> T | None:
        """One piece of `plan` (the job's start or its decoding), posted as `phase`; its result once the last
        piece has run. A piece that fails answers the job."""
        self.board.set(entry.job.job_id, phase, plan.done, plan.total)
        began = time.perf_counter()
        try:
            with collect() as phases, self._watch(entry):
                plan.step()
        except Exception as exc:
            self._leave(entry, self._fault(exc))
            return None
        finally:
            entry.attained_s += time.perf_counter() - began
        entry.phases.extend(phases)
        if not plan.finished:
            self.board.set(entry.job.job_id, phase, plan.done, plan.total)
            return None
        return plan.result

    def _watch(self, entry: Entry) -> AbstractContextManager[None]:
        """Post the engine's phases for this job as they begin: ranking (encoding and decoding are posted with
        their pieces, runners/progress.py)."""
        return watch(lambda name: self.board.engine_phase(entry.job.job_id, name))

    def _next_pass(self, live: list[Entry]) -> list[tuple[Entry, int]]:
        """The least-served job (`live[0]`, denoising) leads with its window size; jobs of that size fill the
        pass, least served first."""
        assert live[0].state is not None
        size = live[0].state.windows.size
        candidates = [e for e in live if e.denoising and e.state.windows.size == size]  # type: ignore[union-attr]
        if not self.share_passes:
            candidates = candidates[:1]
        parts: list[tuple[Entry, int]] = []
        room = self.engine.max_rows
        for entry in candidates:
            state = entry.state
            assert state is not None
            fits = min(state.pending, room // state.rows_per_window)
            if not parts:
                fits = max(fits, 1)  # the leader always advances
            if fits <= 0:
                break
            parts.append((entry, fits))
            room -= fits * state.rows_per_window
        return parts

    def _run_pass(self, parts: list[tuple[Entry, int]]) -> None:
        for entry, _ in parts:
            if entry.passes == 0:
                entry.denoise_started_ns = time.time_ns()
            entry.passes += 1
            entry.most_jobs_in_a_pass = max(entry.most_jobs_in_a_pass, len(parts))
        began = time.perf_counter()
        try:
            self.engine.denoise_pass([(entry.state, count) for entry, count in parts])  # type: ignore[misc]
        except Exception as exc:
            if len(parts) > 1:
                logger.warning(
                    "a pass of %d jobs failed (%s); running them one at a time", len(parts), type(exc).__name__
                )
                for part in parts:
                    self._run_pass([part])
                return
            entry = parts[0][0]
            self.active.remove(entry)
            entry.answer(None, self._fault(exc), self.board)
            return
        elapsed = time.perf_counter() - began
        rows = sum(count * entry.state.rows_per_window for entry, count in parts)  # type: ignore[union-attr]
        for entry, count in parts:
            state = entry.state
            assert state is not None
            entry.attained_s += elapsed * count * state.rows_per_window / rows
            self.board.set(entry.job.job_id, "denoising", state.step, len(state.timesteps))

    def _denoised(self, entry: Entry) -> None:
        """Its last step is done: the denoising is a phase of its trace, its decoding is planned."""
        state = entry.state
        assert state is not None
        if entry.passes:
            entry.phases.append(
                Phase(
                    "denoise",
                    entry.denoise_started_ns,
                    time.time_ns(),
                    {
                        "steps": len(state.timesteps),
                        "rows": state.latents.shape[0],
                        "windows": len(state.windows),
                        "passes": entry.passes,
                    },
                )
            )
        entry.decoding = self.engine.finish(state)
        self.board.set(entry.job.job_id, "decoding", 0, entry.decoding.total)

    @staticmethod
    def _fault(exc: Exception) -> JobError:
        if isinstance(exc, torch.OutOfMemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            logger.warning("job ran out of accelerator memory alone")
            return OUT_OF_MEMORY_ALONE
        logger.exception("job failed")
        return JobError(
            kind="internal", message=f"inference failed ({type(exc).__name__}); the error is in the runner's log"
        )
