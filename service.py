"""audio-studio: the public HTTP API, composed from the model runners.

The front holds no model. It validates requests (pydantic, in schemas.py),
decodes uploads, fixes the seed, awaits the runner asynchronously (so
concurrent requests reach the runner's adaptive batcher together) and turns
the runner's answer into an audio file or JSON. What happens at the HTTP edge
(body limits, the error shape, disconnects, readiness, shutdown) lives in
front/.
"""

from __future__ import annotations

import quiet_imports  # noqa: F401  # before torch's libraries: their harmless import-time warnings

# isort: split

import dataclasses
import logging
import secrets
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated

import anyio
import bentoml
from bentoml.validators import ContentType
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

import compat
from audio_io import MAX_UPLOAD_BYTES, AudioInputError, DecodedAudio, decode_upload
from compat.bentoml_route_metrics import label_as_routes
from core.caller import ANONYMOUS, CALLER
from core.errors import error_response, kind_of_status
from core.quotas import QuotaSettings, open_quotas
from core.rooms import RunnerRoom
from core.runner_calls import RunnerUnavailable, call_runner, run_job
from core.work import Answer, ProgressTarget, Work
from front.access import AccessGuard, OpenPaths
from front.admission import Admission
from front.body_pace import BodyPace
from front.critique_stream import critique_events, event_stream, wants_stream
from front.critique_work import Conversation, CritiquePlan, SegmentSettings, critique_problem, decode_clips
from front.docs_page import DocsPage
from front.edge import EdgeGuard
from front.families import FAMILY_OF, ModelsRoute, family_refusal
from front.openai_api.audio import generate_request
from front.openai_api.chat import CHAT_BODY_LIMIT, completion, completion_chunks, read_chat
from front.openai_api.errors import OpenAIErrors, Refusal
from front.openai_api.models import OpenAIModelsRoute, document_openai
from front.openai_api.protocol import (
    AUDIO_GENERATE,
    CHAT_COMPLETIONS,
    MODELS,
    AudioGenerateRequest,
    ChatCompletion,
    ChatCompletionRequest,
)
from front.openapi import FILE_HEADERS, OpenAPIDocument
from front.playground import PATH as PLAYGROUND_PATH
from front.playground import playground_app
from front.rendering import answers_503_when_a_runner_is_down, audio_answer
from front.studio import CRITIC_SHARE, rank_by_critic
from front.trace_header import TraceIdHeader
from jobs import open_store
from jobs.errors import JobRefusal
from jobs.manager import JobLimits, JobManager
from jobs.openapi import document_jobs
from jobs.records import JobStatus
from jobs.requests import RequestFolder, StoredRequest
from jobs.routes import JobRoutes, accepted, refusal_response
from jobs.webhooks import webhook_settings
from models.allocator import keep_freed_request_buffers
from registry import AUDIOLDM, AUDIOLDM2, FAMILIES, MUSIC_FLAMINGO, Family
from runners.audioldm import AudioLDMRunner
from runners.audioldm2 import AudioLDM2Runner
from runners.music_flamingo import MusicFlamingoRunner
from schemas import (
    AUDIOLDM2_SAMPLE_RATE,
    MAX_SEED,
    MAX_TRANSFORM_SECONDS,
    MIN_TRANSFORM_SECONDS,
    WEBHOOK_FIELDS,
    CritiqueJobRequest,
    CritiqueRequest,
    CritiqueResponse,
    DeliveryParams,
    EditJob,
    EditJobRequest,
    EditRequest,
    EditSpan,
    GenerateJobRequest,
    GenerateRequest,
    GenerateResponse,
    GenerationJob,
    GenerationOutcome,
    RankBy,
    RunnerLimits,
    TransformJob,
    TransformJobRequest,
    TransformRequest,
    samples_to_bytes,
)
from settings import REQUEST_TIMEOUT_S, SETTINGS
from telemetry import span, tracing_config

logger = logging.getLogger("bentoml.audio_studio")

AudioFile = Annotated[Path, ContentType("audio/wav")]
# Seed, format and compression, and a job's webhook: the front's business, not the runner's.
DELIVERY_FIELDS = frozenset(DeliveryParams.model_fields) | WEBHOOK_FIELDS

compat.install_all()  # library patches (compat/), installed once per process even where a runner module did it first
STREAM_IN_A_JOB = "a job is not streamed: its events (GET /jobs/{id}/events) carry the text so far"
JOB_ROUTES = JobRoutes()  # /jobs/{job_id}...: status, events, result, cancel (the manager is set at start-up)
# The submission routes (/jobs/<route>) and the request each takes: a kept request is read back as its route's.
JobRequest = GenerateJobRequest | TransformJobRequest | EditJobRequest | CritiqueJobRequest
JOB_REQUESTS: dict[str, type[JobRequest]] = {
    "generate": GenerateJobRequest,
    "generate/json": GenerateJobRequest,
    "transform": TransformJobRequest,
    "transform/json": TransformJobRequest,
    "edit": EditJobRequest,
    "edit/json": EditJobRequest,
    "critique": CritiqueJobRequest,
}


def draw_seed(request: DeliveryParams | CritiqueRequest) -> int:
    return request.seed if request.seed is not None else secrets.randbelow(MAX_SEED - 4)


def upload_error(error: AudioInputError) -> JSONResponse:
    return error_response(kind_of_status(error.status), error.message, field=error.field)


def with_status(answer: Answer, ctx: bentoml.Context) -> Answer:
    """An API that takes the context is answered with the context's status, whatever its response says."""
    if isinstance(answer, Response):
        ctx.response.status_code = answer.status_code
    return answer


async def run(preparing: Awaitable[Work | JSONResponse]) -> Answer:
    """A synchronous route's answer: the work run now, or the refusal it already is."""
    work = await preparing
    return work if isinstance(work, JSONResponse) else await work.run()


@bentoml.service(
    name="audio-studio",
    workers=1,
    traffic={"timeout": REQUEST_TIMEOUT_S},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    **tracing_config(SETTINGS),
)
@bentoml.asgi_app(JOB_ROUTES.app, path="/jobs", name="jobs")
class AudioStudio:
    """Text-to-audio and audio-to-audio with AudioLDM2; music critique with Music Flamingo."""

    # In the same `bentoml serve` by default; a separate process or pod when its URL is configured.
    audioldm2 = bentoml.depends(AudioLDM2Runner, url=AUDIOLDM2.settings.url)
    if AUDIOLDM.deployed:  # optional (registry.py): by default with the tiny profile only
        audioldm = bentoml.depends(AudioLDMRunner, url=AUDIOLDM.settings.url)
    music_flamingo = bentoml.depends(MusicFlamingoRunner, url=MUSIC_FLAMINGO.settings.url)

    def __init__(self) -> None:
        logger.info("audio-studio front: profile=%s", SETTINGS.profile.value)
        keep_freed_request_buffers()
        self._flamingo_limits_seen: RunnerLimits | None = None
        self.jobs = JobManager(
            open_store(SETTINGS),
            JobLimits(
                SETTINGS.job_retention_s,
                SETTINGS.jobs_max_active,
                SETTINGS.jobs_max_active_per_key,
                SETTINGS.jobs_max_input_mib << 20,
                SETTINGS.job_max_attempts,
            ),
            rooms=RUNNER_ROOMS,
            requests=RequestFolder(SETTINGS.job_data_dir / "requests"),
            build=self._job_work,
            webhooks=webhook_settings(SETTINGS),
        )
        JOB_ROUTES.manager = self.jobs
        logger.info(
            "jobs: store %s", "sqlite in " + str(SETTINGS.job_data_dir) if SETTINGS.job_store == "sqlite" else "redis"
        )

    async def __is_ready__(self) -> bool:
        """Ready when the job store answers (Redis, with several replicas): /readyz."""
        return await self.jobs.ready()

    @bentoml.api(route="/generate")
    @answers_503_when_a_runner_is_down
    async def generate(self, request: GenerateRequest, /) -> AudioFile:
        """Generate audio from text; the response body is the audio file (the best-ranked waveform).

        Provenance travels in headers: X-Seed, X-Model-Id, X-Profile, X-Clap-Score / X-Critic-Score when ranked.
        """
        return await run(self._generation(request, as_json=False))

    @bentoml.api(route="/generate/json")
    @answers_503_when_a_runner_is_down
    async def generate_json(self, request: GenerateRequest, /) -> GenerateResponse:
        """Generate audio from text; every waveform comes back base64-encoded with its seed, score and timings."""
        return await run(self._generation(request, as_json=True))

    @bentoml.api(route="/transform")
    @answers_503_when_a_runner_is_down
    async def transform(self, request: TransformRequest, /) -> AudioFile:
        """Re-synthesise an uploaded clip toward a prompt (multipart/form-data); the response is the audio file."""
        return await run(self._transformation(request, as_json=False))

    @bentoml.api(route="/transform/json")
    @answers_503_when_a_runner_is_down
    async def transform_json(self, request: TransformRequest, /) -> GenerateResponse:
        """Re-synthesise an uploaded clip toward a prompt; JSON with the audio base64-encoded and metadata."""
        return await run(self._transformation(request, as_json=True))

    @bentoml.api(route="/edit")
    @answers_503_when_a_runner_is_down
    async def edit(self, request: EditRequest, /) -> AudioFile:
        """Edit an uploaded clip (multipart/form-data): regenerate a time range (`inpaint`) or add audio at either
        end (`extend`), keeping the rest. The response is the audio file; the regenerated range, in the output's
        time, is in X-Edit-Start / X-Edit-End (seconds)."""
        return await run(self._edit(request, as_json=False))

    @bentoml.api(route="/edit/json")
    @answers_503_when_a_runner_is_down
    async def edit_json(self, request: EditRequest, /) -> GenerateResponse:
        """Edit an uploaded clip; JSON with the audio base64-encoded, the regenerated range (`edited`) and metadata."""
        return await run(self._edit(request, as_json=True))

    @bentoml.api(route="/critique")
    async def critique(self, request: CritiqueRequest, /, ctx: bentoml.Context) -> CritiqueResponse:
        """Listen to a recording (and optionally a reference) and answer in text: teaching feedback,
        description, key, tempo, comparison (multipart/form-data). With `stream=true` (or `Accept:
        text/event-stream`) the text comes as Server-Sent Events while it is written, the whole answer last."""
        return with_status(await self._critique(request, ctx.request.headers.get("accept", "")), ctx)

    @answers_503_when_a_runner_is_down
    async def _critique(self, request: CritiqueRequest, accept: str) -> Answer:
        work = await self._critique_work(request)
        if isinstance(work, JSONResponse):  # input errors are plain answers, streamed or not
            return work
        if wants_stream(request.stream, accept):
            return event_stream(critique_events(work))
        return await work.run()

    # ---- the OpenAI protocol (front/openai_api/, docs/openai.md): the same runners and batches -------------------

    @bentoml.api(route=CHAT_COMPLETIONS)
    async def chat_completions(self, request: ChatCompletionRequest, /, ctx: bentoml.Context) -> ChatCompletion:
        """OpenAI's chat completions, answered by Music Flamingo: text and audio (`input_audio`, or an `audio_url`
        with a data: URL) in, text out; `stream`, `response_format` (`json_object`, or `json_schema` with your own
        schema), `stop`, `seed`. Errors in OpenAI's shape."""
        return with_status(await self._chat(request), ctx)

    @bentoml.api(route=AUDIO_GENERATE)
    @answers_503_when_a_runner_is_down
    async def audio_generate(self, request: AudioGenerateRequest, /) -> AudioFile:
        """vLLM-Omni's text-to-audio route, answered by AudioLDM2 like /generate: the response body is the audio
        file. Errors in OpenAI's shape."""
        try:
            native = generate_request(request)
        except Refusal as refusal:
            return refusal.response()
        return await run(self._generation(native, as_json=False))

    @answers_503_when_a_runner_is_down
    async def _chat(self, request: ChatCompletionRequest) -> Answer:
        try:
            chat = read_chat(request)
        except Refusal as refusal:
            return refusal.response()
        with tempfile.TemporaryDirectory(prefix="audio-studio-chat-") as folder:
            critique = await anyio.to_thread.run_sync(chat.critique_request, Path(folder))
            work = await self._critique_work(critique, chat.conversation)
        if isinstance(work, JSONResponse):
            return work
        if request.stream:
            return event_stream(completion_chunks(work, chat))
        return await completion(work, chat)

    # ---- the same work as jobs (jobs/): 202 at once, then status, events, result, cancel under /jobs/{id} ----

    @bentoml.api(route="/jobs/generate")
    async def submit_generate(self, request: GenerateJobRequest, /, ctx: bentoml.Context) -> JobStatus:
        """Submit /generate's request as a job; 202 with the job's status. Its result is /generate's audio file."""
        return await self._submit("generate", request, ctx)

    @bentoml.api(route="/jobs/generate/json")
    async def submit_generate_json(self, request: GenerateJobRequest, /, ctx: bentoml.Context) -> JobStatus:
        """Submit /generate/json's request as a job; its result is /generate/json's JSON (every waveform)."""
        return await self._submit("generate/json", request, ctx)

    @bentoml.api(route="/jobs/transform")
    async def submit_transform(self, request: TransformJobRequest, /, ctx: bentoml.Context) -> JobStatus:
        """Submit /transform's request as a job (multipart/form-data); its result is /transform's audio file."""
        return await self._submit("transform", request, ctx)

    @bentoml.api(route="/jobs/transform/json")
    async def submit_transform_json(self, request: TransformJobRequest, /, ctx: bentoml.Context) -> JobStatus:
        """Submit /transform/json's request as a job (multipart/form-data); its result is /transform/json's JSON."""
        return await self._submit("transform/json", request, ctx)

    @bentoml.api(route="/jobs/edit")
    async def submit_edit(self, request: EditJobRequest, /, ctx: bentoml.Context) -> JobStatus:
        """Submit /edit's request as a job (multipart/form-data); its result is /edit's audio file."""
        return await self._submit("edit", request, ctx)

    @bentoml.api(route="/jobs/edit/json")
    async def submit_edit_json(self, request: EditJobRequest, /, ctx: bentoml.Context) -> JobStatus:
        """Submit /edit/json's request as a job (multipart/form-data); its result is /edit/json's JSON."""
        return await self._submit("edit/json", request, ctx)

    @bentoml.api(route="/jobs/critique")
    async def submit_critique(self, request: CritiqueJobRequest, /, ctx: bentoml.Context) -> JobStatus:
        """Submit /critique's request as a job (multipart/form-data); its result is /critique's JSON."""
        if request.stream:
            return with_status(error_response("invalid_input", STREAM_IN_A_JOB, field="stream"), ctx)
        return await self._submit("critique", request, ctx)

    # ---- the steps behind the routes -----------------------------------------------

    async def _submit(self, route: str, request: JobRequest, ctx: bentoml.Context) -> Response:
        """Check the request as its synchronous route would, then keep it with its seed fixed and queue it (202), or
        refuse it (4xx/429/503). The job runs from what was kept (jobs/requests.py), after a restart too."""
        request = request.model_copy(update={"seed": draw_seed(request)})
        try:
            work = await self._work(route, request)
            if isinstance(work, JSONResponse):
                response: Response = work
            else:
                caller = ctx.request.scope.get(CALLER, ANONYMOUS)
                count_per_key = SETTINGS.api_keys_file is not None
                webhook = None if request.webhook is None else (request.webhook, request.webhook_events)
                status = await self.jobs.submit(work, request, route, caller, count_per_key, webhook)
                response = accepted(status)
        except RunnerUnavailable as error:
            response = error_response("unavailable", str(error))
        except JobRefusal as refusal:
            response = refusal_response(refusal)
        return with_status(response, ctx)

    def _work(self, route: str, request: JobRequest) -> Awaitable[Work | JSONResponse]:
        """What the synchronous route of `route` does with `request` (a job submitted there)."""
        if isinstance(request, GenerateRequest):
            return self._generation(request, as_json=route.endswith("/json"))
        if isinstance(request, TransformRequest):
            return self._transformation(request, as_json=route.endswith("/json"))
        if isinstance(request, EditRequest):
            return self._edit(request, as_json=route.endswith("/json"))
        return self._critique_work(request)

    async def _job_work(self, stored: StoredRequest) -> Work | JSONResponse:
        """A job's work, built when it starts from the request kept at its submission."""
        return await self._work(stored.route, JOB_REQUESTS[stored.route].model_validate_json(stored.body))

    async def _generation(self, request: GenerateRequest, as_json: bool) -> Work | JSONResponse:
        refusal = family_refusal(request.model.value, "generate", request.duration, "duration")
        if refusal is not None:
            return refusal
        seed = draw_seed(request)
        job = GenerationJob(**request.model_dump(exclude={*DELIVERY_FIELDS, "rank_by", "model"}), seed=seed)
        family = FAMILY_OF[request.model.value]
        work = self._diffusion_work(family, "generate", job, request, as_json)
        if request.rank_by is not RankBy.CRITIC:
            return work
        limits = await self._flamingo_limits(cached=False)  # its runner down: 503 before generating
        target = ProgressTarget(job.job_id, family.name, work.progress, (0.0, 1.0 - CRITIC_SHARE))

        async def generate_then_rank() -> GenerationOutcome:
            generated = await run_job(family.name, work.submit, work.cancel, job, target.renamed)
            return await rank_by_critic(self.music_flamingo.to_async, job.prompt, generated, limits, target)

        return dataclasses.replace(work, execute=generate_then_rank, target=target)

    async def _transformation(self, request: TransformRequest, as_json: bool) -> Work | JSONResponse:
        refusal = family_refusal(request.model.value, "transform", 0.0, "audio")
        if refusal is not None:
            return refusal
        clip = await self._clip(request.audio)
        if isinstance(clip, JSONResponse):
            return clip
        job = TransformJob(
            **request.model_dump(exclude={*DELIVERY_FIELDS, "audio", "model"}),
            seed=draw_seed(request),
            samples_f32le=samples_to_bytes(clip.samples),
        )
        return self._diffusion_work(FAMILY_OF[request.model.value], "transform", job, request, as_json)

    async def _edit(self, request: EditRequest, as_json: bool) -> Work | JSONResponse:
        clip = await self._clip(request.audio)
        if isinstance(clip, JSONResponse):
            return clip
        problem = request.problem(len(clip.samples), AUDIOLDM2_SAMPLE_RATE)
        if problem is not None:
            return error_response("invalid_input", problem[1], field=problem[0])
        job = EditJob(
            **request.model_dump(exclude={*DELIVERY_FIELDS, "audio"}),
            seed=draw_seed(request),
            samples_f32le=samples_to_bytes(clip.samples),
        )
        edited = request.span(len(clip.samples), AUDIOLDM2_SAMPLE_RATE)
        return self._diffusion_work(AUDIOLDM2, "edit", job, request, as_json, edited)

    @staticmethod
    async def _clip(upload: Path) -> DecodedAudio | JSONResponse:
        """An AudioLDM2 input clip (transform, edit): decoded to 16 kHz mono within the transform's limits."""
        try:
            with span("front.decode_uploads", clips=1) as decoding:
                clip = await anyio.to_thread.run_sync(
                    lambda: decode_upload(
                        upload,
                        "audio",
                        AUDIOLDM2_SAMPLE_RATE,
                        MAX_TRANSFORM_SECONDS,
                        truncate=False,
                        min_seconds=MIN_TRANSFORM_SECONDS,
                    )
                )
                decoding.set_attribute("audio_seconds", clip.seconds)
        except AudioInputError as error:
            return upload_error(error)
        return clip

    def _diffusion_work(
        self,
        family: Family,
        kind: str,
        job: GenerationJob | TransformJob | EditJob,
        delivery: DeliveryParams,
        as_json: bool,
        edited: EditSpan | None = None,
    ) -> Work:
        """`kind` (generate, transform or edit) on the runner of `family`, answered as audio or JSON."""
        runner = getattr(self, family.name).to_async  # each generation family's dependency is named after it
        started = time.perf_counter()
        return Work(
            kind=kind,
            runner=family.name,
            job=job,
            submit=getattr(runner, kind),
            cancel=runner.cancel,
            progress=runner.progress,
            render=lambda outcome: audio_answer(outcome, delivery, as_json, started, edited),
            seed=job.seed,
            input_bytes=0 if isinstance(job, GenerationJob) else len(job.samples_f32le),
        )

    async def _critique_work(
        self, request: CritiqueRequest, conversation: Conversation | None = None
    ) -> Work | JSONResponse:
        started = time.perf_counter()
        problem = critique_problem(request)
        if problem is not None:
            return error_response("invalid_input", problem[1], field=problem[0])
        limits = await self._flamingo_limits()
        segments = SegmentSettings(
            min(SETTINGS.critique_segment_seconds or limits.max_clip_seconds, limits.max_clip_seconds),
            SETTINGS.critique_segment_overlap_seconds,
        )
        try:
            with span("front.decode_uploads", clips=len(request.uploads)) as decoding:
                clips = await anyio.to_thread.run_sync(lambda: decode_clips(request, limits, segments))
                decoding.set_attribute("audio_seconds", sum(clip.seconds for clip in clips))
        except AudioInputError as error:
            return upload_error(error)
        plan = CritiquePlan(request, clips, draw_seed(request), segments, limits.sample_rate, started, conversation)
        return plan.work(self.music_flamingo.to_async)

    async def _flamingo_limits(self, cached: bool = True) -> RunnerLimits:
        """The Music Flamingo checkpoint's limits (asked once; `cached=False` also checks the runner is up)."""
        if self._flamingo_limits_seen is None or not cached:
            self._flamingo_limits_seen = await call_runner(MUSIC_FLAMINGO.name, self.music_flamingo.to_async.limits)
        return self._flamingo_limits_seen


async def stop_jobs(deadline: float) -> None:
    """The front's drain on SIGTERM (front/edge.py) stops this process's jobs, once the service has started."""
    if JOB_ROUTES.manager is not None:
        await JOB_ROUTES.manager.stop(deadline)


# One room per runner in this front, shared by the routes that queue on it and by its jobs (core/rooms.py).
RUNNER_ROOMS = {
    family.name: RunnerRoom(family.name, family.settings.max_batch_size, family.settings.max_queued)
    for family in FAMILIES
}
ROOM_OF_ROUTE = {route: RUNNER_ROOMS[family.name] for family in FAMILIES for route in family.routes}
JOB_SUBMISSIONS = {f"/jobs/{route}" for route in JOB_REQUESTS}

# The front's middlewares, outermost first (inside BentoML's tracing, metrics and access log).
if SETTINGS.playground:
    AudioStudio.mount_asgi_app(playground_app(), path=PLAYGROUND_PATH, name="playground")
if SETTINGS.cors_origins:
    AudioStudio.add_asgi_middleware(
        CORSMiddleware,
        allow_origins=list(SETTINGS.cors_origins),
        allow_methods=["GET", "POST", "DELETE"],  # DELETE /jobs/{id} cancels a job
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "traceparent", "tracestate"],
        expose_headers=[  # what a page may read beyond the safelisted few: every header the API answers with
            *(name for name, *_ in FILE_HEADERS),  # the file routes' provenance
            "Content-Disposition",
            "Location",  # a job's 202
            "Retry-After",
            "WWW-Authenticate",
            "X-Trace-Id",
            "X-BentoML-Request-Id",
        ],
    )
OPEN_PATHS = OpenPaths(
    metrics=not SETTINGS.metrics_need_key, docs=not SETTINGS.docs_need_key, ui=not SETTINGS.ui_need_key
)
AudioStudio.add_asgi_middleware(OpenAIErrors)  # outermost of ours: /v1's errors from every layer below
AudioStudio.add_asgi_middleware(TraceIdHeader)
AudioStudio.add_asgi_middleware(
    AccessGuard, keys_file=SETTINGS.api_keys_file, open_paths=OPEN_PATHS, api_routes=set(ROOM_OF_ROUTE)
)
AudioStudio.add_asgi_middleware(
    EdgeGuard,
    service=AudioStudio,
    max_upload_bytes=MAX_UPLOAD_BYTES,
    shutdown_grace_s=SETTINGS.shutdown_grace_s,
    stop_jobs=stop_jobs,
    json_limits={CHAT_COMPLETIONS: CHAT_BODY_LIMIT},  # its audio comes base64 in the JSON
)
AudioStudio.add_asgi_middleware(
    Admission,
    rooms=ROOM_OF_ROUTE,
    submissions=JOB_SUBMISSIONS,
    quotas=open_quotas(
        SETTINGS.job_store,
        QuotaSettings(SETTINGS.key_max_in_flight, SETTINGS.key_rate_per_minute, SETTINGS.key_burst),
        lease_s=REQUEST_TIMEOUT_S,
    ),
    pace=BodyPace(SETTINGS.body_timeout_s, SETTINGS.body_min_rate_kib_s * 1024),
)
AudioStudio.add_asgi_middleware(ModelsRoute)
AudioStudio.add_asgi_middleware(OpenAIModelsRoute)
label_as_routes(ModelsRoute.PATH, MODELS)  # BentoML's request metrics: a path of its own, though no route of the router
AudioStudio.add_asgi_middleware(DocsPage)  # `/`: Swagger UI without BentoML's third-party tag
AudioStudio.add_asgi_middleware(
    OpenAPIDocument,
    service=AudioStudio,
    open_paths=OPEN_PATHS if SETTINGS.api_keys_file else None,
    fragments=[document_jobs, document_openai],  # what BentoML does not see: the job routes, /v1's error shape
)
