"""A critique request as rows for the Music Flamingo runner, and the public answer built from their outcomes.

One row, or for `long_audio: segments` one row per segment of the performance (in one batch) and a text-only
row that summarises them (front/studio.py runs them). With `output: json` every row is decoded under the
structured critique's grammar (critique_format.py) and the answer carries the object.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np
from starlette.responses import JSONResponse

from audio_io import AudioInputError, DecodedAudio, decode_upload, probe_upload
from core.errors import error_response
from core.work import ProgressTarget, Work
from critique_format import MAX_SEGMENTS, StructuredCritique, grammar_text, instruction
from front.rendering import job_error_response
from front.studio import (
    FlamingoApis,
    critique_in_segments,
    merged,
    parsed,
    plan_segments,
    segment_note,
    segment_step,
    summary_prompt,
)
from presets import NEEDS_AUDIO, NEEDS_REFERENCE, compose_prompt
from registry import MUSIC_FLAMINGO
from schemas import (
    MAX_TOTAL_AUDIO_SECONDS,
    ChatTurn,
    ClipUsage,
    CritiqueJob,
    CritiqueOutcome,
    CritiqueOutputFormat,
    CritiqueRequest,
    CritiqueResponse,
    LongAudio,
    RunnerLimits,
    Segment,
    Timings,
    samples_to_bytes,
)


@dataclass(frozen=True)
class SegmentSettings:
    seconds: float  # the longest a segment may be: the checkpoint's per-clip limit unless set lower
    overlap_s: float

    @property
    def longest_recording_s(self) -> float:
        """What MAX_SEGMENTS segments cover."""
        return self.seconds + (MAX_SEGMENTS - 1) * segment_step(self.seconds, self.overlap_s)


def critique_problem(request: CritiqueRequest) -> tuple[str, str] | None:
    """The field at fault and why, for combinations pydantic's per-field bounds cannot express."""
    if request.reference and not request.audio:
        return "reference", "a reference needs `audio` (the performance to compare with it)"
    if request.preset in NEEDS_AUDIO and not request.audio:
        return "audio", f"preset `{request.preset.value}` needs an audio upload"
    if request.preset in NEEDS_REFERENCE and not request.reference:
        return "reference", f"preset `{request.preset.value}` needs a reference recording"
    if not request.audio and not (request.prompt and request.prompt.strip()):
        return "prompt", "send audio, a prompt, or both"
    return None


def decode_clips(request: CritiqueRequest, limits: RunnerLimits, segments: SegmentSettings) -> list[DecodedAudio]:
    """Check every upload's header (the total length too) before decoding any of them.

    With `long_audio: segments` the performance is decoded whole, to be heard in segments; a reference is cut to
    the per-clip limit as ever.
    """
    uploads = request.uploads
    whole = request.long_audio is LongAudio.SEGMENTS
    durations = [probe_upload(path, field).duration for field, path in uploads]  # the performance first
    if (total := sum(durations)) > MAX_TOTAL_AUDIO_SECONDS:
        raise AudioInputError(
            uploads[0][0], f"the uploads hold {total:.1f} s of audio; the limit is {MAX_TOTAL_AUDIO_SECONDS} s"
        )
    if whole and request.audio:
        longest = segments.longest_recording_s
        if (seconds := durations[0]) > longest:
            raise AudioInputError(
                "audio",
                f"the recording is {seconds:.1f} s; in segments of {segments.seconds:g} s it may be at most "
                f"{longest:g} s ({MAX_SEGMENTS} segments)",
            )
    return [
        decode_upload(
            path,
            field,
            limits.sample_rate,
            MAX_TOTAL_AUDIO_SECONDS if whole and field == "audio" else limits.max_clip_seconds,
            truncate=True,
            min_seconds=limits.min_clip_seconds,
        )
        for field, path in uploads
    ]


@dataclass(frozen=True)
class Conversation:
    """What a chat request adds to a critique (front/openai_api/chat.py): the turns before the user's last, and for
    the answering row a caller's JSON schema and stop strings."""

    history: list[ChatTurn]
    json_schema: str | None = None
    stop: list[str] = field(default_factory=list)

    def turns(self, prompt: str | None, clips: int) -> list[ChatTurn]:
        """The history, then the user's last turn with the clips the history does not carry; a row without clips
        (a segmented critique's summary) hears none in any turn."""
        earlier = [t if clips else t.model_copy(update={"clips": 0}) for t in self.history]
        carried = sum(t.clips for t in earlier)
        return [*earlier, ChatTurn(role="user", text=prompt or "", clips=clips - carried)]


@dataclass(frozen=True)
class CritiquePlan:
    """The rows of one checked critique request and how their outcomes become its answer."""

    request: CritiqueRequest
    clips: list[DecodedAudio]
    seed: int
    segment_settings: SegmentSettings
    sample_rate: int
    started: float  # perf_counter at arrival
    conversation: Conversation | None = None

    @property
    def bounds(self) -> list[tuple[float, float]]:
        if not self.clips or self.request.long_audio is not LongAudio.SEGMENTS:
            return []
        return plan_segments(self.clips[0].seconds, self.segment_settings.seconds, self.segment_settings.overlap_s)

    @property
    def segmented(self) -> bool:
        return len(self.bounds) > 1

    @property
    def structured(self) -> bool:
        return self.request.output is CritiqueOutputFormat.JSON

    @property
    def asked(self) -> str | None:
        return compose_prompt(self.request.preset, self.request.prompt)

    def row(self, prompt: str | None, clips: list[np.ndarray], seed: int, answers: bool = True) -> CritiqueJob:
        """One runner job with the request's generation settings; structured rows get the instruction and grammar.
        A conversation's turns come with every row; its schema and stop strings with the row that `answers`."""
        reference, timed = bool(self.request.reference), bool(clips)
        if self.structured:
            prompt = "\n\n".join(part for part in (prompt, instruction(reference, timed)) if part)
        chat = self.conversation
        schema = grammar_text(reference, timed) if self.structured else chat.json_schema if chat and answers else None
        return CritiqueJob(
            **self.request.model_dump(include={"max_new_tokens", "do_sample", "temperature", "top_p"}),
            prompt=prompt,
            clips_f32le=[samples_to_bytes(samples) for samples in clips],
            seed=seed,
            json_schema=schema,
            turns=chat.turns(prompt, len(clips)) if chat else [],
            stop=chat.stop if chat and answers else [],
        )

    def rows(self) -> list[CritiqueJob]:
        """The request's one row, or one per segment (the performance's part, the reference whole; seed + k)."""
        samples = [clip.samples for clip in self.clips]
        if not self.segmented:
            return [self.row(self.asked, samples, self.seed)]
        rate, bounds = self.sample_rate, self.bounds
        return [
            self.row(
                "\n\n".join(part for part in (self.asked, segment_note(k, bounds)) if part),
                [samples[0][int(start * rate) : int(end * rate)], *samples[1:]],
                self.seed + k,
                answers=False,
            )
            for k, (start, end) in enumerate(bounds)
        ]

    def summarise(self, texts: list[str]) -> CritiqueJob:
        """The text-only pass over the segments' answers (seed after theirs)."""
        return self.row(summary_prompt(self.asked, self.bounds, texts), [], self.seed + len(self.bounds))

    def respond(self, final: CritiqueOutcome, segments: list[CritiqueOutcome]) -> CritiqueResponse | JSONResponse:
        """The public answer; the first row's error, if any, is the request's."""
        failed = next((o.error for o in [*segments, final] if o.error is not None), None)
        if failed is not None:
            return job_error_response(failed)
        assert final.timings is not None and final.text is not None
        try:
            critique = self.structured_answer(final, segments) if self.structured else None
        except ValueError:  # never expected: the grammar admits only valid objects (see critique_format.load_decoded)
            return error_response("internal", "the structured answer did not validate; retry")
        usage = [
            ClipUsage(field=field, seconds=clip.seconds, source_seconds=clip.source_seconds, truncated=clip.truncated)
            for (field, _), clip in zip(self.request.uploads, self.clips, strict=True)
        ]
        return CritiqueResponse(
            text=final.text if critique is None else critique.model_dump_json(),
            structured=critique,
            closed_early=any(o.closed_early for o in [final, *segments]),
            long_audio=self.request.long_audio,
            segments=[
                Segment(start_s=start, end_s=end, text=s.text or "")
                for (start, end), s in zip(self.bounds if segments else [], segments, strict=True)
            ],
            preset=self.request.preset,
            model=final.provenance,
            audio_seconds=usage,
            truncated=any(u.truncated for u in usage),
            tokens_generated=final.tokens_generated + sum(s.tokens_generated for s in segments),
            prompt_tokens=final.prompt_tokens + sum(s.prompt_tokens for s in segments),
            seed=self.seed,
            timings=Timings(**final.timings.model_dump(), total_s=time.perf_counter() - self.started),
        )

    def work(self, flamingo: FlamingoApis) -> Work:
        """The request as work for the Music Flamingo runner: one row, or segments then their summary."""
        rows = self.rows()
        common = {
            "kind": "critique",
            "runner": MUSIC_FLAMINGO.name,
            "job": rows[0],
            "submit": flamingo.critique,
            "cancel": flamingo.cancel,
            "progress": flamingo.progress,
            "seed": self.seed,
            "input_bytes": sum(clip.samples.nbytes for clip in self.clips),  # the performance and the reference
        }
        if not self.segmented:
            return Work(**common, render=functools.partial(self.respond, segments=[]))
        # Not the answer's row until the summarising pass: a stream read before the first stage moved the target
        # would send a segment's text as the answer's.
        target = ProgressTarget(rows[0].job_id, MUSIC_FLAMINGO.name, flamingo.progress, answer=False)
        return Work(
            **common,
            render=lambda run: self.respond(run.final, run.segments),
            execute=lambda: critique_in_segments(flamingo, rows, self.summarise, target),
            target=target,
        )

    def structured_answer(self, final: CritiqueOutcome, segments: list[CritiqueOutcome]) -> StructuredCritique:
        critique = parsed(final.text or "", self.clips[0].seconds if self.clips else 0.0)
        if segments:
            critique = merged(critique, [s.text or "" for s in segments], self.bounds)
        return critique
