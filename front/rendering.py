"""Turning a runner's answer into the public response: the audio file, the JSON form, or the error (a runner
that is down included)."""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from starlette.responses import JSONResponse, Response

from audio_io import encode_audio
from core.errors import error_response
from core.runner_calls import RunnerUnavailable
from schemas import DeliveryParams, EditSpan, GeneratedWaveform, GenerateResponse, GenerationOutcome, JobError, Timings

P = ParamSpec("P")
R = TypeVar("R")


def job_error_response(error: JobError) -> JSONResponse:
    """A runner's per-job error as the public error answer."""
    if error.kind == "invalid_input":
        return error_response("invalid_input", error.message, field=error.field or "request")
    if error.kind == "cancelled":  # its client left (no one reads this), or the runner is shutting down
        return error_response("unavailable", error.message)
    return error_response(error.kind, error.message)


def audio_answer(
    outcome: GenerationOutcome,
    delivery: DeliveryParams,
    as_json: bool,
    started: float,
    edited: EditSpan | None = None,
) -> Response | GenerateResponse:
    """The audio file or its JSON form (with an edit's range), or the runner's per-job error as the error answer."""
    if outcome.error is not None:
        return job_error_response(outcome.error)
    if as_json:
        return audio_json_response(outcome, delivery, time.perf_counter() - started, edited)
    return audio_file_response(outcome, delivery, edited)


def audio_file_response(outcome: GenerationOutcome, delivery: DeliveryParams, edited: EditSpan | None) -> Response:
    """The best-ranked waveform as a file; provenance in headers."""
    audio_format = delivery.format
    best = outcome.waveforms[0]
    headers = {
        "Content-Disposition": f'attachment; filename="audio-{best.seed}.{audio_format.value}"',
        "X-Seed": str(best.seed),
        "X-Model-Id": outcome.provenance.model_id,
        "X-Profile": outcome.provenance.profile,
        "X-Sample-Rate": str(outcome.sample_rate),
    }
    if best.clap_score is not None:
        headers["X-Clap-Score"] = f"{best.clap_score:.6f}"
    if best.critic_score is not None:
        headers["X-Critic-Score"] = str(best.critic_score)
    if edited is not None:
        headers["X-Edit-Start"], headers["X-Edit-End"] = f"{edited.start_s:.6f}", f"{edited.end_s:.6f}"
    body = encode_audio(best.samples, outcome.sample_rate, audio_format, delivery.compression)
    return Response(body, media_type=audio_format.media_type, headers=headers)


def audio_json_response(
    outcome: GenerationOutcome, delivery: DeliveryParams, total_s: float, edited: EditSpan | None
) -> GenerateResponse:
    assert outcome.timings is not None
    return GenerateResponse(
        format=delivery.format,
        sample_rate=outcome.sample_rate,
        duration=len(outcome.waveforms[0].samples) / outcome.sample_rate,
        waveforms=[
            GeneratedWaveform(
                audio_base64=base64.b64encode(
                    encode_audio(w.samples, outcome.sample_rate, delivery.format, delivery.compression)
                ).decode(),
                seed=w.seed,
                clap_score=w.clap_score,
                critic_score=w.critic_score,
                critic_reason=w.critic_reason,
            )
            for w in outcome.waveforms
        ],
        provenance=outcome.provenance,
        timings=Timings(**outcome.timings.model_dump(), total_s=total_s),
        edited=edited,
    )


def answers_503_when_a_runner_is_down(api: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | JSONResponse]]:
    """Wrap a public API: a RunnerUnavailable anywhere inside becomes a clear 503 instead of a 500."""

    @functools.wraps(api)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        try:
            return await api(*args, **kwargs)
        except RunnerUnavailable as error:
            return error_response("unavailable", str(error))

    return wrapper
