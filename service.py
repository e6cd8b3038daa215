"""audio-studio: the public HTTP API, composed from the model runners.

The front holds no model. It validates requests (pydantic, in schemas.py),
fixes the seed, awaits the runner asynchronously (so concurrent requests reach
the runner's adaptive batcher together) and turns the runner's answer into an
audio file or JSON.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from starlette.responses import JSONResponse, Response

from audio_io import MEDIA_TYPES, encode_audio
from runners.audioldm2 import AudioLDM2Runner
from schemas import (
    MAX_SEED,
    GeneratedWaveform,
    GenerateRequest,
    GenerateResponse,
    GenerationJob,
    GenerationOutcome,
    JobError,
    Timings,
)
from settings import SETTINGS

logger = logging.getLogger("bentoml.audio_studio")

# HTTP status for each way a job can fail inside a runner.
ERROR_STATUS = {"out_of_memory": 503, "non_finite": 500, "internal": 500}


def error_response(error: JobError) -> JSONResponse:
    headers = {"Retry-After": "10"} if error.kind == "out_of_memory" else None
    return JSONResponse(
        {"error": error.message, "kind": error.kind}, status_code=ERROR_STATUS[error.kind], headers=headers
    )


@bentoml.service(
    name="audio-studio",
    workers=1,
    traffic={"timeout": 900},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
)
class AudioStudio:
    """Text-to-audio with AudioLDM2 (more APIs join as their runners land)."""

    audioldm2 = bentoml.depends(AudioLDM2Runner)

    def __init__(self) -> None:
        logger.info("audio-studio front: profile=%s", SETTINGS.profile.value)

    async def _generate(self, request: GenerateRequest) -> tuple[GenerationOutcome, float]:
        started = time.perf_counter()
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED - 4)
        job = GenerationJob(**request.model_dump(exclude={"seed", "format"}), seed=seed)
        [outcome] = await self.audioldm2.to_async.generate([job])
        return outcome, time.perf_counter() - started

    @bentoml.api(route="/generate")
    async def generate(self, request: GenerateRequest, /) -> Annotated[Path, ContentType("audio/wav")]:
        """Generate audio from text; the response body is the audio file (the best-ranked waveform).

        Provenance travels in headers: X-Seed, X-Model-Id, X-Profile, X-Clap-Score when ranked.
        """
        outcome, _ = await self._generate(request)
        if outcome.error is not None:
            return error_response(outcome.error)
        best = outcome.waveforms[0]
        headers = {
            "Content-Disposition": f'attachment; filename="audio-{best.seed}.{request.format.value}"',
            "X-Seed": str(best.seed),
            "X-Model-Id": outcome.provenance.model_id,
            "X-Profile": outcome.provenance.profile,
            "X-Sample-Rate": str(outcome.sample_rate),
        }
        if best.clap_score is not None:
            headers["X-Clap-Score"] = f"{best.clap_score:.6f}"
        body = encode_audio(best.samples, outcome.sample_rate, request.format)
        return Response(body, media_type=MEDIA_TYPES[request.format], headers=headers)

    @bentoml.api(route="/generate/json")
    async def generate_json(self, request: GenerateRequest, /) -> GenerateResponse:
        """Generate audio from text; every waveform comes back base64-encoded with its seed, score and timings."""
        outcome, total_s = await self._generate(request)
        if outcome.error is not None:
            return error_response(outcome.error)
        assert outcome.timings is not None
        return GenerateResponse(
            format=request.format,
            sample_rate=outcome.sample_rate,
            duration=request.duration,
            waveforms=[
                GeneratedWaveform(
                    audio_base64=base64.b64encode(
                        encode_audio(w.samples, outcome.sample_rate, request.format)
                    ).decode(),
                    seed=w.seed,
                    clap_score=w.clap_score,
                )
                for w in outcome.waveforms
            ],
            provenance=outcome.provenance,
            timings=Timings(**outcome.timings.model_dump(), total_s=total_s),
        )
