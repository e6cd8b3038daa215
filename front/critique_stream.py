"""POST /critique as Server-Sent Events: the text as the runner writes it, then the whole answer.

The runner call is the one the unstreamed route makes (core/work.py), so the request shares its batch as ever and its
answer is unchanged. While it is in flight the front reads the row's text so far from the runner's `progress` API
(runners/music_flamingo.py posts it every few tokens): one call per tick for every stream this process serves
(TextFeed). A client that leaves cancels the runner call, which tells the runner to drop the row
(core/runner_calls.py), as for the unstreamed route.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, StreamingResponse

from core.errors import ErrorResponse
from core.runner_calls import RunnerUnavailable
from core.work import ProgressCall, ProgressTarget, Work
from front.studio import SegmentedCritique
from schemas import CritiqueOutcome, CritiqueResponse, RunnerProgress

logger = logging.getLogger("bentoml.audio_studio")

EVENT_STREAM = "text/event-stream"
POLL_S = 0.15  # how often the text so far is asked for: a delta at most this much after the runner posts it
PROGRESS_TIMEOUT_S = 2.0
FAILED_IN_FRONT = "the critique failed in the front; see its log"


class CritiqueDelta(BaseModel):
    """The data of a `delta` event."""

    text: str = Field(description="The text written since the last delta; all deltas together are the answer's text.")
    tokens: int = Field(description="Tokens the answering row has generated so far (with segments: the summary).")


class StreamError(ErrorResponse):
    """The data of an `error` event: the error body the unstreamed route would answer, with its status."""

    status: int = Field(description="The HTTP status the unstreamed route would have answered.")


def wants_stream(stream_field: bool, accept: str) -> bool:
    """`stream=true`, or an Accept header that asks for an event stream."""
    return stream_field or EVENT_STREAM in accept.lower()


def event(name: str, data: BaseModel) -> bytes:
    return f"event: {name}\ndata: {data.model_dump_json()}\n\n".encode()


class TextFeed:
    """One `progress` call per tick for all the rows this process streams, however many streams there are."""

    def __init__(self, poll_s: float = POLL_S) -> None:
        self.poll_s = poll_s
        self.waiting: dict[str, list[tuple[str, asyncio.Future[RunnerProgress | None]]]] = {}
        self.calls: dict[str, ProgressCall] = {}
        self.ticking: asyncio.Task[None] | None = None

    def read(self, target: ProgressTarget) -> asyncio.Future[RunnerProgress | None]:
        """The followed row's progress at the next tick (None if the runner did not answer)."""
        future: asyncio.Future[RunnerProgress | None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(target.runner, []).append((target.job_id, future))
        self.calls[target.runner] = target.progress
        if self.ticking is None or self.ticking.done():
            self.ticking = asyncio.get_running_loop().create_task(self.tick())
        return future

    async def tick(self) -> None:
        """Every `poll_s` while reads wait (one made during a round waits for the next round)."""
        while self.waiting:
            await asyncio.sleep(self.poll_s)
            waiting, self.waiting = self.waiting, {}
            await asyncio.gather(*(self.ask(runner, rows) for runner, rows in waiting.items()))

    async def ask(self, runner: str, rows: list[tuple[str, asyncio.Future[RunnerProgress | None]]]) -> None:
        rows = [(job_id, future) for job_id, future in rows if not future.done()]  # its stream has ended
        if not rows:
            return
        try:
            updates: list[RunnerProgress | None] = list(
                await asyncio.wait_for(self.calls[runner]([job_id for job_id, _ in rows]), PROGRESS_TIMEOUT_S)
            )
        except Exception as exc:  # best effort: the runner call itself reports a runner that is down
            logger.debug("critique stream: no progress from %s (%s)", runner, exc)
            updates = [None] * len(rows)
        for (_, future), update in zip(rows, updates, strict=True):
            if not future.done():
                future.set_result(update)


FEED = TextFeed()


def final_row(run: CritiqueOutcome | SegmentedCritique) -> CritiqueOutcome:
    """The runner outcome that holds the answer's text (a segmented critique's summarising pass)."""
    return run.final if isinstance(run, SegmentedCritique) else run


def keeping_final(work: Work) -> tuple[Work, list[CritiqueOutcome]]:
    """`work` whose rendering also keeps the outcome of the row that wrote the answer, in the list returned."""
    finals: list[CritiqueOutcome] = []

    def render(run: Any) -> Any:
        finals.append(final_row(run))
        return work.render(run)

    return dataclasses.replace(work, render=render), finals


@dataclass(frozen=True)
class Written:
    """Text the answering row wrote since the last piece."""

    text: str
    tokens: int


@dataclass(frozen=True)
class Answered:
    """The whole answer, and the runner outcome of the row that wrote it."""

    answer: CritiqueResponse
    final: CritiqueOutcome


@dataclass(frozen=True)
class Failed:
    error: StreamError


async def critique_pieces(work: Work, feed: TextFeed = FEED) -> AsyncIterator[Written | Answered | Failed]:
    """The answer's text as it is written, then the answer (or the error the unstreamed route would answer).

    Closing the iterator early (the client left, or has what it wanted) cancels the runner call, which tells its
    runner to drop the row.
    """
    work, finals = keeping_final(work)
    answering = asyncio.ensure_future(work.run())
    sent = ""
    reading: asyncio.Future[RunnerProgress | None] = asyncio.get_running_loop().create_future()
    try:
        while not answering.done():
            target = work.followed()
            writes_answer, reading = target.answer, feed.read(target)  # the target moves between stages
            await asyncio.wait([answering, reading], return_when=asyncio.FIRST_COMPLETED)
            update = reading.result() if reading.done() else None
            text = update.text if update is not None and writes_answer else None
            if text and len(text) > len(sent) and text.startswith(sent):
                yield Written(text[len(sent) :], update.done if update else 0)
                sent = text
        answer = answering.result()
    except RunnerUnavailable as error:
        yield Failed(StreamError(error=str(error), kind="unavailable", status=503))
        return
    except Exception:
        logger.exception("critique stream failed")
        yield Failed(StreamError(error=FAILED_IN_FRONT, kind="internal", status=500))
        return
    finally:
        answering.cancel()  # the client left mid-stream: the runner call tells its runner to drop the row
        reading.cancel()
    if isinstance(answer, JSONResponse):
        yield Failed(StreamError(**json.loads(bytes(answer.body)), status=answer.status_code))
        return
    assert isinstance(answer, CritiqueResponse) and finals
    final = finals[0]
    rest = (final.text or "")[len(sent) :]
    if rest:
        yield Written(rest, final.tokens_generated)
    yield Answered(answer, final)


async def critique_events(work: Work) -> AsyncIterator[bytes]:
    """/critique's events: `delta` while the critique decodes, then `result` (or `error`)."""
    async for piece in critique_pieces(work):
        if isinstance(piece, Written):
            yield event("delta", CritiqueDelta(text=piece.text, tokens=piece.tokens))
        elif isinstance(piece, Answered):
            yield event("result", piece.answer)
        else:
            yield event("error", piece.error)


def event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},  # proxies pass each event on at once
    )
