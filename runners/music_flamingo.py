"""The Music Flamingo runner: one process owns the model and serves adaptive batches of critiques."""

from __future__ import annotations

import asyncio
import logging
import time

import bentoml
import torch

import compat
from critique_format import every_grammar_text
from models.music_flamingo import (
    BITSANDBYTES_ON_CPU,
    MIN_CLIP_SECONDS,
    CritiqueOutput,
    FieldError,
    MusicFlamingoEngine,
    Turn,
    load_music_flamingo,
)
from models.music_flamingo import CritiqueJob as EngineJob
from models.profiles import Checkpoint, declare_weights, music_flamingo_checkpoint
from registry import MUSIC_FLAMINGO
from runners.batching import GroupRun, run_in_groups
from runners.cancellation import CANCELLED_WHILE_RUNNING, CancelledJobs, count_cancelled
from runners.model_thread import ModelThread
from runners.observe import observe_batch
from runners.progress import DECODER_PHASES, ProgressBoard
from runners.shutdown import stop_everything_after_the_grace
from runners.startup import RUNNER_CONFIG, prepare_model, use_compile_cache
from schemas import (
    MAX_PROMPT_TOKENS,
    MUSIC_FLAMINGO_SAMPLE_RATE,
    CritiqueJob,
    CritiqueOutcome,
    JobError,
    Provenance,
    RunnerLimits,
    RunnerProgress,
    RunnerTimings,
)
from settings import SETTINGS

compat.install_all()  # library patches (compat/)

logger = logging.getLogger("bentoml.audio_studio")


def engine_job(job: CritiqueJob) -> EngineJob:
    return EngineJob(
        prompt=job.prompt,
        clips=job.clips,
        max_new_tokens=job.max_new_tokens,
        do_sample=job.do_sample,
        temperature=job.temperature,
        top_p=job.top_p,
        seed=job.seed,
        job_id=job.job_id,
        json_schema=job.json_schema,
        turns=tuple(Turn(turn.role, turn.text, turn.clips) for turn in job.turns),
        stop=tuple(job.stop),
    )


def load_engine(checkpoint: Checkpoint) -> tuple[MusicFlamingoEngine, ModelThread]:
    """The model as the runner serves it, on the thread that owns it (also what bench/in_process.py measures)."""
    placement, thread = prepare_model(
        MUSIC_FLAMINGO, checkpoint, torch.bfloat16, bitsandbytes_on_cpu=BITSANDBYTES_ON_CPU
    )
    options = placement.options
    if options.decoding == "compiled":
        use_compile_cache(SETTINGS.compile_cache_dir)
    model, processor = thread.call(
        lambda: load_music_flamingo(
            str(checkpoint.path),
            placement.device,
            placement.dtype,
            options.attention,
            options.quantization,
            options.gpu_memory_gib,
        )
    )
    engine = MusicFlamingoEngine(model, processor, decoding=options.decoding)
    seconds = thread.call(engine.warm_up)
    if options.decoding == "compiled":
        logger.info(
            "Music Flamingo runner: decoding step compiled (batch size and cache length dynamic, warmed up at 1 to "
            "%d rows) in %.1f s, kernels cached in %s",
            engine.row_multiple + 1,
            seconds,
            SETTINGS.compile_cache_dir,
        )
    return engine, thread


def holds_stop(text: str | None, stop: tuple[str, ...]) -> bool:
    return bool(text) and any(s in text for s in stop)  # type: ignore[operator]


def refusal(engine: MusicFlamingoEngine, job: EngineJob) -> JobError | None:
    """Per-job input checks the front cannot make (they need the tokenizer); one bad job never runs. On the model
    thread: the tokenizer's audio features are torch work (runners/model_thread.py)."""
    try:
        engine.check(job)
    except FieldError as exc:
        return JobError(kind="invalid_input", field=exc.field, message=str(exc))
    except ValueError as exc:
        return JobError(kind="invalid_input", message=str(exc))
    if engine.prompt_tokens_at_most(job) <= MAX_PROMPT_TOKENS:  # the exact count only near the limit
        return None
    tokens = engine.count_prompt_tokens(job)
    if tokens > MAX_PROMPT_TOKENS:
        return JobError(
            kind="invalid_input",
            field="prompt",
            message=f"the prompt is {tokens} tokens with its audio (about 25 per second of audio); "
            f"the limit is {MAX_PROMPT_TOKENS}",
        )
    return None


# How often a decoding row's text so far is read for the progress board (and so for streamed critiques): every
# this many tokens, and after this long at most when tokens come slowly.
TEXT_EVERY_TOKENS = 4
TEXT_EVERY_S = 0.25


class WrittenSoFar:
    """The text each row of a `generate` call has written so far, read from its new tokens now and then.

    Reading the tokens copies them to the host; on an accelerator that waits for the step, as `generate` does at
    every step anyway (it asks whether any row is unfinished), so it adds no synchronisation. Only the tokens not
    read before are copied. The text is decoded as the final text is (models/music_flamingo.py `text_so_far`).
    """

    def __init__(self, engine: MusicFlamingoEngine, jobs: list[EngineJob]) -> None:
        self.engine, self.budgets = engine, [job.max_new_tokens for job in jobs]
        self.tokens: list[list[int]] = [[] for _ in jobs]  # each row's new tokens read so far, padding included
        self.texts: list[str | None] = [None] * len(jobs)
        self.counts = [0] * len(jobs)  # each row's own tokens (to its end of turn) in the tokens read
        self.steps = self.read_steps = 0
        self.read_at = time.monotonic()

    def step(self, new_tokens: torch.Tensor) -> None:
        self.steps += 1
        due = self.steps - self.read_steps >= TEXT_EVERY_TOKENS or time.monotonic() - self.read_at >= TEXT_EVERY_S
        if self.read_steps and not due:  # the first token is read at once: the first text comes early
            return
        for row, fresh in zip(self.tokens, new_tokens[:, len(self.tokens[0]) :].tolist(), strict=True):
            row.extend(fresh)
        for i, (row, budget) in enumerate(zip(self.tokens, self.budgets, strict=True)):
            self.texts[i], self.counts[i] = self.engine.text_so_far(row, budget)
        self.read_steps, self.read_at = self.steps, time.monotonic()

    def done(self, row: int) -> int:
        """Tokens the row has generated: its own count once it has ended, else one per step up to its budget."""
        ended = self.counts[row] < min(len(self.tokens[row]), self.budgets[row])
        return self.counts[row] if ended else min(self.steps, self.budgets[row])


@bentoml.service(name="music-flamingo-runner", **RUNNER_CONFIG)
class MusicFlamingoRunner:
    weights = declare_weights(SETTINGS, MUSIC_FLAMINGO.settings.checkpoint)

    def __init__(self) -> None:
        self.checkpoint = music_flamingo_checkpoint(SETTINGS, type(self).weights)
        self.engine, self.thread = load_engine(self.checkpoint)
        self.thread.call(self._compile_grammars)
        self.cancelled = CancelledJobs()
        stop_everything_after_the_grace(MUSIC_FLAMINGO.name, self.cancelled, SETTINGS.shutdown_grace_s)
        self.board = ProgressBoard(DECODER_PHASES)
        if self.engine.sample_rate != MUSIC_FLAMINGO_SAMPLE_RATE:
            raise RuntimeError(f"{self.checkpoint.model_id} expects {self.engine.sample_rate} Hz, not 16 kHz")

    def _compile_grammars(self) -> None:
        """The structured critique's grammars for this tokenizer, before the first request rather than in it."""
        for schema in every_grammar_text():
            self.engine.grammars.grammar(schema)

    def __is_ready__(self) -> bool:
        return hasattr(self, "engine")

    @bentoml.api
    def limits(self) -> RunnerLimits:
        """What the loaded checkpoint accepts, so the front can check uploads before sending them."""
        return RunnerLimits(
            max_clip_seconds=self.engine.max_audio_seconds,
            min_clip_seconds=MIN_CLIP_SECONDS,
            sample_rate=self.engine.sample_rate,
        )

    @bentoml.api
    async def cancel(self, job_ids: list[str]) -> None:
        """Forget these jobs: dropped if still queued, their rows finished at the next token if running.

        Async, so it is served on the event loop while a batch holds the model thread.
        """
        self.cancelled.add(job_ids)

    @bentoml.api
    async def progress(self, job_ids: list[str]) -> list[RunnerProgress]:
        """Phase, tokens decoded and text written so far of these jobs (`queued` while still in the batcher's queue)."""
        return self.board.read(job_ids)

    @bentoml.api(
        batchable=SETTINGS.batching,
        max_batch_size=MUSIC_FLAMINGO.settings.max_batch_size,
        max_latency_ms=MUSIC_FLAMINGO.settings.max_latency_ms,
    )
    async def critique(self, jobs: list[CritiqueJob]) -> list[CritiqueOutcome]:
        """The batch runs on the model thread; the event loop stays free for `cancel` and `progress`."""
        return await asyncio.wrap_future(self.thread.submit(lambda: self._critique(jobs)))

    def _critique(self, jobs: list[CritiqueJob]) -> list[CritiqueOutcome]:
        started_ns = time.time_ns()
        outcomes: list[CritiqueOutcome | None] = [None] * len(jobs)
        accepted: list[int] = []
        engine_jobs: list[EngineJob] = []
        for index, job in enumerate(map(engine_job, jobs)):
            error = None if jobs[index].job_id in self.cancelled else refusal(self.engine, job)
            if error is None:
                accepted.append(index)
                engine_jobs.append(job)
            else:
                outcomes[index] = CritiqueOutcome(error=error, provenance=self._provenance())

        def run(group: list[EngineJob]) -> list[CritiqueOutput]:
            for job in group:
                self.board.set(job.job_id, "prefill", 0, job.max_new_tokens)
            written = WrittenSoFar(self.engine, group)

            def stopped(new_tokens: torch.Tensor) -> list[bool]:  # once per decoding step: progress and text so far
                written.step(new_tokens)
                for i, job in enumerate(group):
                    self.board.set(job.job_id, "decoding", written.done(i), job.max_new_tokens, written.texts[i])
                return [
                    job.job_id in self.cancelled or holds_stop(written.texts[i], job.stop)
                    for i, job in enumerate(group)
                ]

            return self.engine.generate(group, stopped=stopped)

        runs = run_in_groups(engine_jobs, self.engine.group_key, run, dropped=lambda job: job.job_id in self.cancelled)
        observe_batch(MUSIC_FLAMINGO.name, [jobs[index] for index in accepted], runs, started_ns)
        for index, run_result in zip(accepted, runs, strict=True):
            outcomes[index] = self._outcome(run_result, len(jobs), jobs[index].job_id)
            self.board.set(jobs[index].job_id, "finished")
        answered = [o for o in outcomes if o is not None]
        count_cancelled(MUSIC_FLAMINGO.name, (o.error for o in answered))
        return answered

    def _provenance(self) -> Provenance:
        return Provenance(model_id=self.checkpoint.model_id, profile=self.checkpoint.profile.value)

    def _outcome(self, run: GroupRun[CritiqueOutput], batch_size: int, job_id: str) -> CritiqueOutcome:
        outcome = CritiqueOutcome(
            provenance=self._provenance(),
            timings=RunnerTimings(batch_size=batch_size, group_size=run.group_size, inference_s=run.inference_s),
        )
        if run.error is not None or run.output is None:
            outcome.error = run.error
            return outcome
        if job_id in self.cancelled:
            outcome.error = CANCELLED_WHILE_RUNNING
            return outcome
        if run.output.non_finite:
            outcome.error = JobError(
                kind="non_finite",
                message="sampling met non-finite probabilities (NaN/Inf) for this request; "
                "retry with another seed or a higher temperature",
            )
            return outcome
        if run.output.grammar_broken:
            outcome.error = JobError(kind="internal", message="the structured output left its grammar; retry")
            return outcome
        outcome.text = run.output.text
        outcome.closed_early = run.output.closed_early
        ids = run.output.token_ids
        outcome.end_of_turn = not run.output.stopped and bool(ids) and ids[-1] in self.engine.eos_token_ids
        outcome.tokens_generated = run.output.tokens_generated
        outcome.prompt_tokens = run.output.prompt_tokens
        return outcome
