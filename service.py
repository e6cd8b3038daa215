"""audio-studio: the public HTTP API, composed from the model runners.

The front holds no model. It validates requests (pydantic, in schemas.py),
decodes uploads, fixes the seed, awaits the runner asynchronously (so
concurrent requests reach the runner's adaptive batcher together) and turns
the runner's answer into an audio file or JSON.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from pathlib import Path
from typing import Annotated

import anyio
import bentoml
from bentoml.validators import ContentType
from starlette.responses import JSONResponse, Response

from audio_io import MEDIA_TYPES, AudioInputError, decode_upload, encode_audio
from runners.audioldm2 import AudioLDM2Runner
from schemas import (
    AUDIOLDM2_SAMPLE_RATE,
    MAX_SEED,
    MAX_TRANSFORM_SECONDS,
    MIN_TRANSFORM_SECONDS,
    AudioFormat,
    DeliveryParams,
    GeneratedWaveform,
    GenerateRequest,
    GenerateResponse,
    GenerationJob,
    GenerationOutcome,
    JobError,
    Timings,
    TransformJob,
    TransformRequest,
    samples_to_bytes,
)
from settings import SETTINGS

logger = logging.getLogger("bentoml.audio_studio")

# HTTP status for each way a job can fail inside a runner.
ERROR_STATUS = {"out_of_memory": 503, "non_finite": 500, "internal": 500}

AudioFile = Annotated[Path, ContentType("audio/wav")]


def job_error_response(error: JobError) -> JSONResponse:
    headers = {"Retry-After": "10"} if error.kind == "out_of_memory" else None
    return JSONResponse(
        {"error": error.message, "kind": error.kind}, status_code=ERROR_STATUS[error.kind], headers=headers
    )


def input_error_response(error: AudioInputError) -> JSONResponse:
    """Same body shape as BentoML's validation errors: one entry per field, naming it and the limit."""
    return JSONResponse(
        {"error": str(error), "detail": [{"loc": [error.field], "msg": error.message, "type": "audio_input"}]},
        status_code=error.status,
    )


def draw_seed(request: DeliveryParams) -> int:
    return request.seed if request.seed is not None else secrets.randbelow(MAX_SEED - 4)


def audio_file_response(outcome: GenerationOutcome, audio_format: AudioFormat) -> Response:
    """The best-ranked waveform as a file; provenance in headers."""
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
    body = encode_audio(best.samples, outcome.sample_rate, audio_format)
    return Response(body, media_type=MEDIA_TYPES[audio_format], headers=headers)


def audio_json_response(outcome: GenerationOutcome, audio_format: AudioFormat, total_s: float) -> GenerateResponse:
    assert outcome.timings is not None
    return GenerateResponse(
        format=audio_format,
        sample_rate=outcome.sample_rate,
        duration=len(outcome.waveforms[0].samples) / outcome.sample_rate,
        waveforms=[
            GeneratedWaveform(
                audio_base64=base64.b64encode(encode_audio(w.samples, outcome.sample_rate, audio_format)).decode(),
                seed=w.seed,
                clap_score=w.clap_score,
            )
            for w in outcome.waveforms
        ],
        provenance=outcome.provenance,
        timings=Timings(**outcome.timings.model_dump(), total_s=total_s),
    )


@bentoml.service(
    name="audio-studio",
    workers=1,
    traffic={"timeout": 900},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
)
class AudioStudio:
    """Text-to-audio and audio-to-audio with AudioLDM2."""

    audioldm2 = bentoml.depends(AudioLDM2Runner)

    def __init__(self) -> None:
        logger.info("audio-studio front: profile=%s", SETTINGS.profile.value)

    async def _generate(self, request: GenerateRequest) -> GenerationOutcome:
        job = GenerationJob(**request.model_dump(exclude={"seed", "format"}), seed=draw_seed(request))
        [outcome] = await self.audioldm2.to_async.generate([job])
        return outcome

    async def _transform(self, request: TransformRequest) -> GenerationOutcome | JSONResponse:
        try:
            clip = await anyio.to_thread.run_sync(
                lambda: decode_upload(
                    request.audio, "audio", AUDIOLDM2_SAMPLE_RATE, MAX_TRANSFORM_SECONDS, truncate=False
                )
            )
            if clip.seconds < MIN_TRANSFORM_SECONDS:
                raise AudioInputError(
                    "audio", f"the clip is {clip.seconds:.2f} s long; the minimum is {MIN_TRANSFORM_SECONDS:g} s"
                )
        except AudioInputError as error:
            return input_error_response(error)
        job = TransformJob(
            **request.model_dump(exclude={"audio", "seed", "format"}),
            seed=draw_seed(request),
            samples_f32le=samples_to_bytes(clip.samples),
        )
        [outcome] = await self.audioldm2.to_async.transform([job])
        return outcome

    @bentoml.api(route="/generate")
    async def generate(self, request: GenerateRequest, /) -> AudioFile:
        """Generate audio from text; the response body is the audio file (the best-ranked waveform).

        Provenance travels in headers: X-Seed, X-Model-Id, X-Profile, X-Clap-Score when ranked.
        """
        outcome = await self._generate(request)
        if outcome.error is not None:
            return job_error_response(outcome.error)
        return audio_file_response(outcome, request.format)

    @bentoml.api(route="/generate/json")
    async def generate_json(self, request: GenerateRequest, /) -> GenerateResponse:
        """Generate audio from text; every waveform comes back base64-encoded with its seed, score and timings."""
        started = time.perf_counter()
        outcome = await self._generate(request)
        if outcome.error is not None:
            return job_error_response(outcome.error)
        return audio_json_response(outcome, request.format, time.perf_counter() - started)

    @bentoml.api(route="/transform")
    async def transform(self, request: TransformRequest, /) -> AudioFile:
        """Re-synthesise an uploaded clip toward a prompt (multipart/form-data); the response is the audio file."""
        outcome = await self._transform(request)
        if isinstance(outcome, JSONResponse):
            return outcome
        if outcome.error is not None:
            return job_error_response(outcome.error)
        return audio_file_response(outcome, request.format)

    @bentoml.api(route="/transform/json")
    async def transform_json(self, request: TransformRequest, /) -> GenerateResponse:
        """Re-synthesise an uploaded clip toward a prompt; JSON with the audio base64-encoded and metadata."""
        started = time.perf_counter()
        outcome = await self._transform(request)
        if isinstance(outcome, JSONResponse):
            return outcome
        if outcome.error is not None:
            return job_error_response(outcome.error)
        return audio_json_response(outcome, request.format, time.perf_counter() - started)
