"""The async client: every API synchronously or as a job, jobs followed through their event stream, critiques
streamed as they are written. The sync client (synchronous.py) runs this one on a loop of its own."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from audio_studio.errors import ApiError, JobCancelled, JobFailed, ServerUnreachable
from audio_studio.results import Audio, Critique, JobStatus
from audio_studio.sse import server_sent

DEFAULT_URL = "http://localhost:3000"
DEFAULT_TIMEOUT_S = 900.0  # the server's own request timeout
CONNECT_TIMEOUT_S = 10.0  # a refused connection fails at once; an unroutable address should not take the whole timeout
# The server sends a keep-alive comment every 15 s on a quiet event stream: four missed ones mean it is gone.
EVENT_READ_TIMEOUT_S = 60.0
RECONNECTS = 5  # event streams dropped in a row before `events` gives up
Upload = str | os.PathLike[str] | bytes | IO[bytes]
OnProgress = Callable[[JobStatus], object]
# Sent when absent: ask for a stream in both ways the server reads, the form field and the Accept header.
STREAM_HEADERS = {"Accept": "text/event-stream"}


def client_version() -> str:
    try:
        return importlib.metadata.version("audio-studio")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout
        return "dev"


def given(fields: dict[str, Any]) -> dict[str, Any]:
    """Only the fields the caller set: the server owns the defaults, so the client never drifts from them."""
    return {key: value for key, value in fields.items() if value is not None}


def form(fields: dict[str, Any]) -> dict[str, str]:
    """Multipart text parts; flags as the words pydantic reads."""
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in given(fields).items()}


def upload_part(stack: ExitStack, name: str, upload: Upload) -> tuple[str, tuple[str, Any]]:
    """A multipart file part: a path is streamed from disk, bytes or a file object are sent as they are."""
    if isinstance(upload, bytes):
        return name, (name, upload)
    if isinstance(upload, str | os.PathLike):
        path = Path(upload)
        return name, (path.name, stack.enter_context(path.open("rb")))
    return name, (Path(getattr(upload, "name", name)).name, upload)


class AsyncJob:
    """A job the server holds: its status, its events, its result, and cancel. `last` is the newest status seen."""

    def __init__(self, client: AsyncClient, status: JobStatus) -> None:
        self.id = status.id
        self.last = status
        self._client = client

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r}, state={self.last.state!r})"

    async def status(self) -> JobStatus:
        self.last = JobStatus.from_json((await self._client.request("GET", f"/jobs/{self.id}")).json())
        return self.last

    async def events(self) -> AsyncIterator[JobStatus]:
        """Every change of status until the final one. A dropped stream is opened again: the server sends the
        current status first, so the events resume where they left off, and one already seen is not repeated."""
        seen: tuple[str, Any] | None = None
        failures = 0
        while True:
            try:
                route = f"/jobs/{self.id}/events"
                async with self._client.stream("GET", route, timeout=EVENT_READ_TIMEOUT_S) as answer:
                    async for event, data in server_sent(answer.aiter_lines()):
                        if event != "status":
                            continue
                        status = JobStatus.from_json(json.loads(data))
                        failures = 0
                        if (status.state, status.progress) != seen:
                            seen, self.last = (status.state, status.progress), status
                            yield status
                        if status.final:
                            return
            except ServerUnreachable:
                pass
            failures += 1  # an error, or a stream that ended before the final status
            if failures > RECONNECTS:
                raise ServerUnreachable(f"the event stream of job {self.id} dropped {failures} times in a row")
            await asyncio.sleep(min(0.25 * 2**failures, 5.0))

    async def wait(self, on_progress: OnProgress | None = None) -> JobStatus:
        """Until the job ends; `on_progress` sees every change, in order. A failed job raises JobFailed with the
        error the synchronous route would have answered, a cancelled one JobCancelled."""
        async for status in self.events():
            if on_progress is not None:
                on_progress(status)
        if self.last.state == "failed":
            raise JobFailed(self.last.error or ApiError("the job failed"), self.last)
        if self.last.state == "cancelled":
            raise JobCancelled(self.last)
        return self.last

    async def result(self) -> Audio | list[Audio] | Critique:
        """What the synchronous route answers: an Audio file, every candidate (a `/json` job), or a Critique.
        Before the job succeeded: ApiError 409; after the retention time: 410."""
        answer = await self._client.request("GET", f"/jobs/{self.id}/result")
        if not answer.headers.get("content-type", "").startswith("application/json"):
            return Audio.from_response(answer)
        body = answer.json()
        return Critique.from_json(body) if self.last.kind == "critique" else Audio.candidates(body)

    async def cancel(self) -> JobStatus:
        self.last = JobStatus.from_json((await self._client.request("POST", f"/jobs/{self.id}/cancel")).json())
        return self.last


class AsyncCritiqueStream:
    """A critique as it is written: iterate for the text pieces; `result` is the whole answer once it ended
    (exactly what the unstreamed call answers)."""

    def __init__(self, events: AsyncIterator[tuple[str, str]]) -> None:
        self._events = events
        self.result: Critique | None = None
        self.tokens = 0

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        async for event, data in self._events:
            body = json.loads(data)
            if event == "delta":
                self.tokens = body.get("tokens", self.tokens)
                yield body["text"]
            elif event == "result":
                self.result = Critique.from_json(body)
            elif event == "error":
                raise ApiError.from_body(body, int(body.get("status", 500)))
        if self.result is None:
            raise ServerUnreachable("the critique stream ended before its result")


class AsyncClient:
    """One server: its URL, an optional API key, and the timeout of one HTTP answer."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url {url!r} must start with http:// or https://")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout:g}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": f"audio-studio-client/{client_version()}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closing a connection is also what tells the server to drop the work of an unfinished synchronous call."""
        await self._http.aclose()

    # ---- HTTP ------------------------------------------------------------------------------------------------

    def _unreachable(self, error: httpx.TransportError) -> ServerUnreachable:
        if isinstance(error, httpx.ConnectError):
            return ServerUnreachable(f"cannot reach {self.url}: {error} (is the server running?)")
        if isinstance(error, httpx.TimeoutException):
            return ServerUnreachable(f"no answer from {self.url} within {self.timeout:g} s")
        return ServerUnreachable(f"connection to {self.url} failed: {error or type(error).__name__}")

    async def request(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        """A 2xx answer; anything else raises ApiError (ServerUnreachable when there was no answer)."""
        try:
            answer = await self._http.request(method, route, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if answer.is_error:
            raise ApiError.from_response(answer)
        return answer

    @asynccontextmanager
    async def stream(self, method: str, route: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A 2xx answer whose body is read as it comes; a connection lost while reading raises ServerUnreachable."""
        try:
            async with self._http.stream(method, route, **kwargs) as answer:
                if answer.is_error:
                    await answer.aread()
                    raise ApiError.from_response(answer)
                yield answer
        except httpx.TransportError as error:
            raise self._unreachable(error) from None

    # ---- jobs ------------------------------------------------------------------------------------------------

    async def job(self, job_id: str) -> AsyncJob:
        """A job submitted earlier, by its id (ApiError 404 when there is none, or not for this API key)."""
        return AsyncJob(self, JobStatus.from_json((await self.request("GET", f"/jobs/{job_id}")).json()))

    async def _submit(self, route: str, fields: dict[str, Any], **uploads: Upload | None) -> AsyncJob:
        answer = await self._send(f"/jobs{route}", fields, uploads)
        return AsyncJob(self, JobStatus.from_json(answer.json()))

    async def _send(self, route: str, fields: dict[str, Any], uploads: dict[str, Upload | None]) -> httpx.Response:
        """JSON for the routes without uploads, else a form with the uploads (those given) as file parts."""
        if not uploads:
            return await self.request("POST", route, json=given(fields))
        with ExitStack() as stack:
            parts = [upload_part(stack, name, upload) for name, upload in uploads.items() if upload is not None]
            return await self.request("POST", route, data=form(fields), files=parts or None)

    async def submit_generate(self, prompt: str, *, candidates: bool = False, **fields: Any) -> AsyncJob:
        """Start a generation; `fields` are /generate's (duration, steps, seed, format, ...: `/docs.json`).
        With `candidates`, the result is every waveform (as /generate/json), else the best one's file."""
        return await self._submit("/generate/json" if candidates else "/generate", {"prompt": prompt, **fields})

    async def submit_transform(
        self, audio: Upload, prompt: str, *, candidates: bool = False, **fields: Any
    ) -> AsyncJob:
        return await self._submit(
            "/transform/json" if candidates else "/transform", {"prompt": prompt, **fields}, audio=audio
        )

    async def submit_edit(self, audio: Upload, prompt: str, *, candidates: bool = False, **fields: Any) -> AsyncJob:
        """Start an edit: `mode="inpaint"` with `start_s` and `end_s`, or `mode="extend"` with `seconds` (and `side`);
        the other fields are /edit's (blend_s, repaint_jumps, steps, seed, format, ...: `/docs.json`)."""
        return await self._submit("/edit/json" if candidates else "/edit", {"prompt": prompt, **fields}, audio=audio)

    async def submit_critique(
        self, audio: Upload | None = None, *, reference: Upload | None = None, **fields: Any
    ) -> AsyncJob:
        return await self._submit("/critique", fields, audio=audio, reference=reference)

    # ---- the APIs, waited for ----------------------------------------------------------------------------------

    async def _run(self, job: AsyncJob, on_progress: OnProgress | None) -> Audio | list[Audio] | Critique:
        """Wait for a job and fetch its result; a wait interrupted here (Ctrl-C, a cancelled task) cancels it."""
        try:
            await job.wait(on_progress)
        except (asyncio.CancelledError, KeyboardInterrupt):
            await asyncio.shield(job.cancel())
            raise
        return await job.result()

    async def generate(
        self, prompt: str, *, job: bool = True, on_progress: OnProgress | None = None, **fields: Any
    ) -> Audio:
        """Text to audio: the best candidate's file. As a job by default (progress, no proxy timeout); with
        `job=False`, one HTTP call to /generate."""
        if not job:
            return Audio.from_response(await self._send("/generate", {"prompt": prompt, **fields}, {}))
        result = await self._run(await self.submit_generate(prompt, **fields), on_progress)
        assert isinstance(result, Audio)
        return result

    async def generate_candidates(
        self, prompt: str, *, job: bool = True, on_progress: OnProgress | None = None, **fields: Any
    ) -> list[Audio]:
        """Every waveform (`num_waveforms`), best first when ranked."""
        if not job:
            return Audio.candidates((await self._send("/generate/json", {"prompt": prompt, **fields}, {})).json())
        result = await self._run(await self.submit_generate(prompt, candidates=True, **fields), on_progress)
        assert isinstance(result, list)
        return result

    async def transform(
        self, audio: Upload, prompt: str, *, job: bool = True, on_progress: OnProgress | None = None, **fields: Any
    ) -> Audio:
        """A clip re-synthesised toward `prompt`; the input's length and rate."""
        if not job:
            return Audio.from_response(await self._send("/transform", {"prompt": prompt, **fields}, {"audio": audio}))
        result = await self._run(await self.submit_transform(audio, prompt, **fields), on_progress)
        assert isinstance(result, Audio)
        return result

    async def edit(
        self, audio: Upload, prompt: str, *, job: bool = True, on_progress: OnProgress | None = None, **fields: Any
    ) -> Audio:
        """A clip with a range regenerated (`mode="inpaint"`, `start_s`, `end_s`) or extended (`mode="extend"`,
        `seconds`, `side`); `Audio.edited` is the regenerated range in the output's time."""
        if not job:
            return Audio.from_response(await self._send("/edit", {"prompt": prompt, **fields}, {"audio": audio}))
        result = await self._run(await self.submit_edit(audio, prompt, **fields), on_progress)
        assert isinstance(result, Audio)
        return result

    async def critique(
        self,
        audio: Upload | None = None,
        *,
        reference: Upload | None = None,
        job: bool = True,
        on_progress: OnProgress | None = None,
        **fields: Any,
    ) -> Critique:
        """Music Flamingo on a recording (and a reference); `fields`: preset, prompt, max_new_tokens, ... ."""
        if not job:
            answer = await self._send("/critique", fields, {"audio": audio, "reference": reference})
            return Critique.from_json(answer.json())
        result = await self._run(await self.submit_critique(audio, reference=reference, **fields), on_progress)
        assert isinstance(result, Critique)
        return result

    def stream_critique(
        self, audio: Upload | None = None, *, reference: Upload | None = None, **fields: Any
    ) -> AsyncCritiqueStream:
        """The critique's text as it is written: `async for piece in client.stream_critique(...)`, then
        `.result`. Leaving the loop early closes the connection, and the server drops the row."""
        return AsyncCritiqueStream(self._critique_events(fields, {"audio": audio, "reference": reference}))

    async def _critique_events(
        self, fields: dict[str, Any], uploads: dict[str, Upload | None]
    ) -> AsyncIterator[tuple[str, str]]:
        with ExitStack() as stack:
            parts = [upload_part(stack, name, upload) for name, upload in uploads.items() if upload is not None]
            body = form({**fields, "stream": True})
            async with self.stream(
                "POST", "/critique", data=body, files=parts or None, headers=STREAM_HEADERS
            ) as answer:
                async for event in server_sent(answer.aiter_lines()):
                    yield event

    async def models(self) -> list[dict[str, Any]]:
        """The model families the server runs (GET /models)."""
        return (await self.request("GET", "/models")).json()["models"]
