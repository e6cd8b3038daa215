"""The sync client: the async one (asynchronous.py) run on an event loop in a thread of its own, so both behave
the same by construction. Progress callbacks are called on that thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from audio_studio.asynchronous import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    AsyncClient,
    AsyncCritiqueStream,
    AsyncJob,
    OnProgress,
    Upload,
)
from audio_studio.results import Audio, Critique, JobStatus

T = TypeVar("T")


CLEAN_UP_S = 10.0  # what an interrupted call may take to clean up (one cancel request)


class _Loop:
    """An event loop on a daemon thread; `run` waits for one coroutine, and cancels it if the wait is interrupted
    (Ctrl-C), so the async code's own clean-up (cancelling a job) runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="audio-studio-client", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        finished = threading.Event()

        async def started() -> asyncio.Task[T]:
            task = asyncio.ensure_future(coroutine)
            task.add_done_callback(lambda _: finished.set())
            return task

        task = asyncio.run_coroutine_threadsafe(started(), self.loop).result()
        try:
            finished.wait()
        except BaseException:  # Ctrl-C: the task's own clean-up (cancelling its job) runs before this returns
            self.loop.call_soon_threadsafe(task.cancel)
            finished.wait(CLEAN_UP_S)
            raise
        return task.result()

    def iterate(self, pieces: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(anext(pieces))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            self.run(pieces.aclose())  # type: ignore[attr-defined]  # an early break closes the connection

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Job:
    """A job the server holds (the sync twin of AsyncJob)."""

    def __init__(self, loop: _Loop, job: AsyncJob) -> None:
        self._loop, self._job = loop, job
        self.id = job.id

    def __repr__(self) -> str:
        return f"Job({self.id!r}, state={self.last.state!r})"

    @property
    def last(self) -> JobStatus:
        return self._job.last

    def status(self) -> JobStatus:
        return self._loop.run(self._job.status())

    def events(self) -> Iterator[JobStatus]:
        return self._loop.iterate(self._job.events())

    def wait(self, on_progress: OnProgress | None = None) -> JobStatus:
        return self._loop.run(self._job.wait(on_progress))

    def result(self) -> Audio | list[Audio] | Critique:
        return self._loop.run(self._job.result())

    def cancel(self) -> JobStatus:
        return self._loop.run(self._job.cancel())


class CritiqueStream:
    """Iterate for the text pieces; `result` is the whole answer once the stream ended."""

    def __init__(self, loop: _Loop, stream: AsyncCritiqueStream) -> None:
        self._loop, self._stream = loop, stream

    def __iter__(self) -> Iterator[str]:
        return self._loop.iterate(aiter(self._stream))

    @property
    def result(self) -> Critique | None:
        return self._stream.result


class Client:
    """One server (the sync twin of AsyncClient): every API synchronously or as a job, and streamed critiques."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._client = AsyncClient(url, api_key, timeout)
        self._loop = _Loop()
        self.url = self._client.url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self._client.aclose())
        self._loop.close()

    def _job(self, job: Coroutine[Any, Any, AsyncJob]) -> Job:
        return Job(self._loop, self._loop.run(job))

    def job(self, job_id: str) -> Job:
        return self._job(self._client.job(job_id))

    def submit_generate(self, prompt: str, *, candidates: bool = False, **fields: Any) -> Job:
        return self._job(self._client.submit_generate(prompt, candidates=candidates, **fields))

    def submit_transform(self, audio: Upload, prompt: str, *, candidates: bool = False, **fields: Any) -> Job:
        return self._job(self._client.submit_transform(audio, prompt, candidates=candidates, **fields))

    def submit_edit(self, audio: Upload, prompt: str, *, candidates: bool = False, **fields: Any) -> Job:
        return self._job(self._client.submit_edit(audio, prompt, candidates=candidates, **fields))

    def submit_critique(self, audio: Upload | None = None, *, reference: Upload | None = None, **fields: Any) -> Job:
        return self._job(self._client.submit_critique(audio, reference=reference, **fields))

    def generate(self, prompt: str, *, job: bool = True, on_progress: OnProgress | None = None, **fields: Any) -> Audio:
        return self._loop.run(self._client.generate(prompt, job=job, on_progress=on_progress, **fields))

    def generate_candidates(
        self, prompt: str, *, job: bool = True, on_progress: OnProgress | None = None, **fields: Any
    ) -> list[Audio]:
        return self._loop.run(self._client.generate_candidates(prompt, job=job, on_progress=on_progress, **fields))

    def transform(
        self, audio: Upload, prompt: str, *, job: bool = True, on_progress: OnProgress | None = None, **fields: Any
    ) -> Audio:
        return self._loop.run(self._client.transform(audio, prompt, job=job, on_progress=on_progress, **fields))

    def edit(
        self, audio: Upload, prompt: str, *, job: bool = True, on_progress: OnProgress | None = None, **fields: Any
    ) -> Audio:
        return self._loop.run(self._client.edit(audio, prompt, job=job, on_progress=on_progress, **fields))

    def critique(
        self,
        audio: Upload | None = None,
        *,
        reference: Upload | None = None,
        job: bool = True,
        on_progress: OnProgress | None = None,
        **fields: Any,
    ) -> Critique:
        return self._loop.run(
            self._client.critique(audio, reference=reference, job=job, on_progress=on_progress, **fields)
        )

    def stream_critique(
        self, audio: Upload | None = None, *, reference: Upload | None = None, **fields: Any
    ) -> CritiqueStream:
        return CritiqueStream(self._loop, self._client.stream_critique(audio, reference=reference, **fields))

    def models(self) -> list[dict[str, Any]]:
        return self._loop.run(self._client.models())
