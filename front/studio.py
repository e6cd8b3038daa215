"""Work the front composes from several runner calls: long recordings in segments, generation ranked by listening.

Both send all their rows in one runner call, so the rows share a batch (and concurrent requests' rows join it
through the runner's adaptive batcher); they are plain runner jobs, so batching, cancellation and per-job
errors work as for any request.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.runner_calls import run_jobs
from core.work import ProgressCall, ProgressTarget
from critique_format import (
    CRITIC_SCHEMA_TEXT,
    CriticVerdict,
    StructuredCritique,
    clamp_times,
    critic_prompt,
    load_decoded,
    shift_times,
)
from registry import MUSIC_FLAMINGO
from schemas import CritiqueJob, CritiqueOutcome, GenerationOutcome, JobError, RunnerLimits, samples_to_bytes

CRITIC_MAX_NEW_TOKENS = 96  # a score and a sentence; above the grammar's reserve with any Qwen2 tokenizer here

FlamingoCall = Callable[[list[CritiqueJob]], Awaitable[list[CritiqueOutcome]]]
CancelCall = Callable[[list[str]], Awaitable[None]]


class FlamingoApis(Protocol):
    """The Music Flamingo runner's APIs the studio calls (its `to_async` client)."""

    critique: FlamingoCall
    cancel: CancelCall
    progress: ProgressCall


# ---- long recordings: long_audio=segments --------------------------------------------------------


def segment_step(segment_s: float, overlap_s: float) -> float:
    """Seconds between the starts of full-length segments: neighbours overlap by `overlap_s`, at most half one."""
    return segment_s - min(overlap_s, segment_s / 2)


def plan_segments(seconds: float, segment_s: float, overlap_s: float) -> list[tuple[float, float]]:
    """Boundaries of the fewest overlapping segments of at most `segment_s` covering [0, seconds], all equally long.

    Equal lengths, because the rows share a batch: a short last segment would be padded to the others' length
    and cost as much as they do.
    """
    if seconds <= segment_s:
        return [(0.0, seconds)]
    overlap = segment_s - segment_step(segment_s, overlap_s)
    count = math.ceil((seconds - overlap) / (segment_s - overlap))
    length = (seconds + (count - 1) * overlap) / count
    return [(k * (length - overlap), min(k * (length - overlap) + length, seconds)) for k in range(count)]


def segment_note(index: int, bounds: list[tuple[float, float]]) -> str:
    start, end = bounds[index]
    return (
        f"This is segment {index + 1} of {len(bounds)} of a longer recording, from {start:.1f} s to {end:.1f} s of it. "
        "Give times in seconds from the start of this segment."
    )


def summary_prompt(request: str | None, bounds: list[tuple[float, float]], texts: list[str]) -> str:
    """The text-only pass that turns the segments' critiques into one answer for the whole recording."""
    parts = [
        f"Below are critiques of {len(bounds)} consecutive, overlapping segments of one recording of "
        f"{bounds[-1][1]:.0f} s. Combine them into one answer for the whole recording."
    ]
    if request:
        parts.append(f"The request was:\n{request}")
    parts += [
        f"Segment {k + 1} ({s:.1f}-{e:.1f} s):\n{text}"
        for k, ((s, e), text) in enumerate(zip(bounds, texts, strict=True))
    ]
    return "\n\n".join(parts)


@dataclass(frozen=True)
class SegmentedCritique:
    """The answer for the whole recording and each segment's own (an error in any row is the request's)."""

    final: CritiqueOutcome
    segments: list[CritiqueOutcome]


SEGMENTS_SHARE = 0.85  # of a segmented critique's progress: the segments' batch, then the summarising pass


async def critique_in_segments(
    flamingo: FlamingoApis,
    rows: list[CritiqueJob],
    summarise: Callable[[list[str]], CritiqueJob],
    target: ProgressTarget,
) -> SegmentedCritique:
    """The segment rows in one batch, then the summarising pass over their answers.

    Progress follows the first segment (its batch decodes all of them together), then the summarising row.
    """
    target.move(rows[0].job_id, MUSIC_FLAMINGO.name, flamingo.progress, (0.0, SEGMENTS_SHARE), answer=False)
    segments = await run_jobs(MUSIC_FLAMINGO.name, flamingo.critique, flamingo.cancel, rows, target.renamed)
    failed = next((outcome for outcome in segments if outcome.error is not None), None)
    if failed is not None:
        return SegmentedCritique(failed, segments)
    summary = summarise([s.text or "" for s in segments])
    target.move(summary.job_id, MUSIC_FLAMINGO.name, flamingo.progress, (SEGMENTS_SHARE, 1.0))
    [final] = await run_jobs(MUSIC_FLAMINGO.name, flamingo.critique, flamingo.cancel, [summary], target.renamed)
    return SegmentedCritique(final, segments)


def parsed(text: str, heard_s: float) -> StructuredCritique:
    """A structured row's text as the public object, its times clamped to the audio the row heard."""
    return clamp_times(load_decoded(text, StructuredCritique), heard_s)


def merged(summary: StructuredCritique, segments: list[str], bounds: list[tuple[float, float]]) -> StructuredCritique:
    """The summarising pass's object with every segment's findings (and differences) in the recording's time."""
    shifted = [
        shift_times(parsed(text, end - start), start) for text, (start, end) in zip(segments, bounds, strict=True)
    ]
    differences = [d for s in shifted for d in s.reference_differences or []]
    return summary.model_copy(
        update={
            "findings": sorted((f for s in shifted for f in s.findings), key=lambda f: (f.start_s, f.end_s)),
            "reference_differences": sorted(differences, key=lambda d: d.start_s)
            if any(s.reference_differences is not None for s in shifted)
            else None,
        }
    )


# ---- generation ranked by listening: rank_by=critic ------------------------------------------------


def critic_jobs(prompt: str, outcome: GenerationOutcome, limits: RunnerLimits) -> list[CritiqueJob]:
    """One greedy structured row per candidate, the candidate cut to the checkpoint's per-clip limit."""
    most = int(limits.max_clip_seconds * limits.sample_rate)
    return [
        CritiqueJob(
            prompt=critic_prompt(prompt),
            clips_f32le=[samples_to_bytes(np.asarray(waveform.samples[:most]))],
            max_new_tokens=CRITIC_MAX_NEW_TOKENS,
            seed=waveform.seed,
            json_schema=CRITIC_SCHEMA_TEXT,
        )
        for waveform in outcome.waveforms
    ]


CRITIC_SHARE = 0.1  # of a critic-ranked generation's progress: the critic rows after the generation


async def rank_by_critic(
    flamingo: FlamingoApis, prompt: str, outcome: GenerationOutcome, limits: RunnerLimits, target: ProgressTarget
) -> GenerationOutcome:
    """The candidates with the critic's score and reason, best first (ties by CLAP score, then seed order).

    Progress moves to the first critic row (all rows share its batch) for the last CRITIC_SHARE of the scale, and
    reads `ranking` until the end, the rows' wait for their batch included.
    """
    if outcome.error is not None:
        return outcome
    jobs = critic_jobs(prompt, outcome, limits)
    target.move(
        jobs[0].job_id, MUSIC_FLAMINGO.name, flamingo.progress, (1.0 - CRITIC_SHARE, 1.0), "ranking", answer=False
    )
    verdicts = await run_jobs(MUSIC_FLAMINGO.name, flamingo.critique, flamingo.cancel, jobs, target.renamed)
    failed = next((v.error for v in verdicts if v.error is not None), None)
    if failed is not None:
        return outcome.model_copy(update={"error": failed, "waveforms": []})
    try:
        judged = [load_decoded(v.text or "", CriticVerdict) for v in verdicts]
    except ValueError:  # not JSON, or not the schema (ValidationError)
        error = JobError(kind="internal", message="the critic's answer did not validate; retry")
        return outcome.model_copy(update={"error": error, "waveforms": []})
    waveforms = [
        waveform.model_copy(update={"critic_score": verdict.score, "critic_reason": verdict.reason})
        for waveform, verdict in zip(outcome.waveforms, judged, strict=True)
    ]
    waveforms.sort(key=lambda w: (-(w.critic_score or 0), -(w.clap_score or 0.0)))
    return outcome.model_copy(update={"waveforms": waveforms})
