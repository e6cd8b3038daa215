"""audio-studio: the public HTTP API, composed from the model runners.

The front holds no model. It validates requests (pydantic, in schemas.py),
decodes uploads, fixes the seed, awaits the runner asynchronously (so
concurrent requests reach the runner's adaptive batcher together) and turns
the runner's answer into an audio file or JSON.
"""

from __future__ import annotations

import base64
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Literal, ParamSpec, TypeVar

import aiohttp
import anyio
import bentoml
from bentoml.exceptions import ServiceUnavailable
from bentoml.validators import ContentType
from starlette.responses import JSONResponse, Response

from audio_io import MEDIA_TYPES, AudioInputError, DecodedAudio, decode_upload, encode_audio, probe_upload
from presets import NEEDS_AUDIO, NEEDS_REFERENCE, compose_prompt
from runners.audioldm2 import AudioLDM2Runner
from runners.music_flamingo import MusicFlamingoRunner
from schemas import (
    AUDIOLDM2_SAMPLE_RATE,
    MAX_SEED,
    MAX_TOTAL_AUDIO_SECONDS,
    MAX_TRANSFORM_SECONDS,
    MIN_TRANSFORM_SECONDS,
    AudioFormat,
    ClipUsage,
    CritiqueJob,
    CritiqueRequest,
    CritiqueResponse,
    DeliveryParams,
    GeneratedWaveform,
    GenerateRequest,
    GenerateResponse,
    GenerationJob,
    GenerationOutcome,
    JobError,
    RunnerLimits,
    Timings,
    TransformJob,
    TransformRequest,
    samples_to_bytes,
)
from settings import SETTINGS

logger = logging.getLogger("bentoml.audio_studio")
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

# HTTP status for each way a job can fail inside a runner.
ERROR_STATUS = {"invalid_input": 400, "out_of_memory": 503, "non_finite": 500, "internal": 500}

AudioFile = Annotated[Path, ContentType("audio/wav")]


def field_error_response(field: str, message: str, status: int = 400) -> JSONResponse:
    """Same body shape as BentoML's validation errors: one entry naming the field and the limit."""
    return JSONResponse(
        {"error": f"{field}: {message}", "detail": [{"loc": [field], "msg": message, "type": "invalid_input"}]},
        status_code=status,
    )


def job_error_response(error: JobError) -> JSONResponse:
    if error.kind == "invalid_input":
        return field_error_response(error.field or "request", error.message)
    headers = {"Retry-After": "10"} if error.kind == "out_of_memory" else None
    return JSONResponse(
        {"error": error.message, "kind": error.kind}, status_code=ERROR_STATUS[error.kind], headers=headers
    )


class RunnerUnavailable(Exception):
    """A runner process or pod cannot be reached; the request is answered 503, the front keeps serving."""

    def __init__(self, runner: str, cause: Exception) -> None:
        super().__init__(f"the {runner} runner is unavailable ({type(cause).__name__}); retry later")


DROPPED_CONNECTION_RETRIES = 2


def dropped_connection(exc: Exception) -> bool:
    """A connection failure worth one more try: refused, reset, closed under us, or on a closed session."""
    if isinstance(exc, aiohttp.ClientConnectionError):
        return True
    return isinstance(exc, RuntimeError) and "Session is closed" in str(exc)


async def call_runner(runner: str, call: Callable[[], Awaitable[T]]) -> T:
    """Call a runner API; connection failures (runner down, restarting, unreachable) become RunnerUnavailable.

    A call whose connection is dropped mid-flight is sent again (twice at most): BentoML 1.4.39's proxy replaces its
    connection session every 100 calls and closes the old one under in-flight requests (measured in
    bench/results/serving-one-server.md). Runner calls are idempotent (the seed is fixed before the call),
    so the retry returns exactly what the first attempt would have.
    """
    try:
        for _ in range(DROPPED_CONNECTION_RETRIES):
            try:
                return await call()
            except (aiohttp.ClientConnectionError, RuntimeError) as exc:
                if not dropped_connection(exc):
                    raise
                logger.warning("%s runner connection dropped (%s); sending the request again", runner, exc)
        return await call()
    except (TimeoutError, aiohttp.ClientConnectionError, ServiceUnavailable) as exc:
        logger.warning("%s runner unavailable: %s", runner, exc)
        raise RunnerUnavailable(runner, exc) from exc


def unavailable_response(error: RunnerUnavailable) -> JSONResponse:
    return JSONResponse({"error": str(error), "kind": "unavailable"}, status_code=503, headers={"Retry-After": "5"})


def answers_503_when_a_runner_is_down(api: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | JSONResponse]]:
    """Wrap a public API: a RunnerUnavailable anywhere inside becomes a clear 503 instead of a 500."""

    @functools.wraps(api)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        try:
            return await api(*args, **kwargs)
        except RunnerUnavailable as error:
            return unavailable_response(error)

    return wrapper


def draw_seed(request: DeliveryParams | CritiqueRequest) -> int:
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
    """Text-to-audio and audio-to-audio with AudioLDM2; music critique with Music Flamingo."""

    # In the same `bentoml serve` by default; a separate process or pod when its URL is configured.
    audioldm2 = bentoml.depends(AudioLDM2Runner, url=SETTINGS.audioldm2_url)
    music_flamingo = bentoml.depends(MusicFlamingoRunner, url=SETTINGS.music_flamingo_url)

    def __init__(self) -> None:
        logger.info("audio-studio front: profile=%s", SETTINGS.profile.value)
        self._flamingo_limits: RunnerLimits | None = None

    async def flamingo_limits(self) -> RunnerLimits:
        if self._flamingo_limits is None:
            self._flamingo_limits = await call_runner("music-flamingo", self.music_flamingo.to_async.limits)
        return self._flamingo_limits

    async def _generate(self, request: GenerateRequest) -> GenerationOutcome:
        job = GenerationJob(**request.model_dump(exclude={"seed", "format"}), seed=draw_seed(request))
        [outcome] = await call_runner("audioldm2", lambda: self.audioldm2.to_async.generate([job]))
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
            return field_error_response(error.field, error.message, error.status)
        job = TransformJob(
            **request.model_dump(exclude={"audio", "seed", "format"}),
            seed=draw_seed(request),
            samples_f32le=samples_to_bytes(clip.samples),
        )
        [outcome] = await call_runner("audioldm2", lambda: self.audioldm2.to_async.transform([job]))
        return outcome

    @bentoml.api(route="/generate")
    @answers_503_when_a_runner_is_down
    async def generate(self, request: GenerateRequest, /) -> AudioFile:
        """Generate audio from text; the response body is the audio file (the best-ranked waveform).

        Provenance travels in headers: X-Seed, X-Model-Id, X-Profile, X-Clap-Score when ranked.
        """
        outcome = await self._generate(request)
        if outcome.error is not None:
            return job_error_response(outcome.error)
        return audio_file_response(outcome, request.format)

    @bentoml.api(route="/generate/json")
    @answers_503_when_a_runner_is_down
    async def generate_json(self, request: GenerateRequest, /) -> GenerateResponse:
        """Generate audio from text; every waveform comes back base64-encoded with its seed, score and timings."""
        started = time.perf_counter()
        outcome = await self._generate(request)
        if outcome.error is not None:
            return job_error_response(outcome.error)
        return audio_json_response(outcome, request.format, time.perf_counter() - started)

    @bentoml.api(route="/transform")
    @answers_503_when_a_runner_is_down
    async def transform(self, request: TransformRequest, /) -> AudioFile:
        """Re-synthesise an uploaded clip toward a prompt (multipart/form-data); the response is the audio file."""
        outcome = await self._transform(request)
        if isinstance(outcome, JSONResponse):
            return outcome
        if outcome.error is not None:
            return job_error_response(outcome.error)
        return audio_file_response(outcome, request.format)

    @bentoml.api(route="/transform/json")
    @answers_503_when_a_runner_is_down
    async def transform_json(self, request: TransformRequest, /) -> GenerateResponse:
        """Re-synthesise an uploaded clip toward a prompt; JSON with the audio base64-encoded and metadata."""
        started = time.perf_counter()
        outcome = await self._transform(request)
        if isinstance(outcome, JSONResponse):
            return outcome
        if outcome.error is not None:
            return job_error_response(outcome.error)
        return audio_json_response(outcome, request.format, time.perf_counter() - started)

    @bentoml.api(route="/critique")
    @answers_503_when_a_runner_is_down
    async def critique(self, request: CritiqueRequest, /) -> CritiqueResponse:
        """Listen to a recording (and optionally a reference) and answer in text: teaching feedback,
        description, key, tempo, comparison (multipart/form-data)."""
        started = time.perf_counter()
        uploads = request.uploads
        problem = self._critique_problem(request)
        if problem is not None:
            return field_error_response(*problem)
        limits = await self.flamingo_limits()
        try:
            clips = await anyio.to_thread.run_sync(lambda: self._decode_clips(uploads, limits))
        except AudioInputError as error:
            return field_error_response(error.field, error.message, error.status)
        seed = draw_seed(request)
        job = CritiqueJob(
            **request.model_dump(include={"max_new_tokens", "do_sample", "temperature", "top_p"}),
            prompt=compose_prompt(request.preset, request.prompt),
            clips_f32le=[samples_to_bytes(clip.samples) for clip in clips],
            seed=seed,
        )
        [outcome] = await call_runner("music-flamingo", lambda: self.music_flamingo.to_async.critique([job]))
        if outcome.error is not None:
            return job_error_response(outcome.error)
        assert outcome.timings is not None and outcome.text is not None
        usage = [
            ClipUsage(field=field, seconds=clip.seconds, source_seconds=clip.source_seconds, truncated=clip.truncated)
            for (field, _), clip in zip(uploads, clips, strict=True)
        ]
        return CritiqueResponse(
            text=outcome.text,
            preset=request.preset,
            model=outcome.provenance,
            audio_seconds=usage,
            truncated=any(u.truncated for u in usage),
            tokens_generated=outcome.tokens_generated,
            seed=seed,
            timings=Timings(**outcome.timings.model_dump(), total_s=time.perf_counter() - started),
        )

    @staticmethod
    def _critique_problem(request: CritiqueRequest) -> tuple[str, str] | None:
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

    @staticmethod
    def _decode_clips(
        uploads: list[tuple[Literal["audio", "reference"], Path]], limits: RunnerLimits
    ) -> list[DecodedAudio]:
        """Check every upload's header (the total length too) before decoding any of them."""
        total = sum(probe_upload(path, field).duration for field, path in uploads)
        if total > MAX_TOTAL_AUDIO_SECONDS:
            raise AudioInputError(
                uploads[0][0], f"the uploads hold {total:.1f} s of audio; the limit is {MAX_TOTAL_AUDIO_SECONDS} s"
            )
        return [
            decode_upload(path, field, limits.sample_rate, limits.max_clip_seconds, truncate=True)
            for field, path in uploads
        ]
