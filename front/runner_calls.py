"""Calling a runner from the front: dropped connections resent, a runner that is down is a 503, and a
request whose client left tells its runner to drop the job."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import aiohttp
from bentoml.exceptions import ServiceUnavailable
from starlette.responses import JSONResponse

from front.errors import error_response

logger = logging.getLogger("bentoml.audio_studio")
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

DROPPED_CONNECTION_RETRIES = 2
CANCEL_TIMEOUT_S = 3.0  # a cancel is a tiny call; a runner that cannot answer it in time is down or frozen
_cancellations: set[asyncio.Task[None]] = set()  # keeps fire-and-forget cancel calls alive until they finish


class RunnerUnavailable(Exception):
    """A runner process or pod cannot be reached; the request is answered 503, the front keeps serving."""

    def __init__(self, runner: str, cause: Exception) -> None:
        super().__init__(f"the {runner} runner is unavailable ({type(cause).__name__}); retry later")


def dropped_connection(exc: Exception) -> bool:
    """A connection failure worth one more try: refused, reset, closed under us, or on a closed session."""
    if isinstance(exc, aiohttp.ClientConnectionError):
        return True
    return isinstance(exc, RuntimeError) and "Session is closed" in str(exc)


async def call_runner(
    runner: str, call: Callable[[], Awaitable[T]], cancel: Callable[[], Awaitable[None]] | None = None
) -> T:
    """Call a runner API; connection failures (runner down, restarting, unreachable) become RunnerUnavailable.

    A call whose connection is dropped mid-flight is sent again (twice at most): BentoML 1.4.39's proxy replaces its
    connection session every 100 calls and closes the old one under in-flight requests (measured in
    bench/results/serving-one-server.md). Runner calls are idempotent (the seed is fixed before the call),
    so the retry returns exactly what the first attempt would have.

    When the caller is cancelled (its client disconnected, see front/edge.py), `cancel` is sent to the runner
    in the background: BentoML cannot take a queued job back, so the runner drops it itself.
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
    except asyncio.CancelledError:
        if cancel is not None:
            task = asyncio.get_running_loop().create_task(_send_cancel(runner, cancel))
            _cancellations.add(task)
            task.add_done_callback(_cancellations.discard)
        raise
    except (TimeoutError, aiohttp.ClientConnectionError, ServiceUnavailable) as exc:
        logger.warning("%s runner unavailable: %s", runner, exc)
        raise RunnerUnavailable(runner, exc) from exc


async def _send_cancel(runner: str, cancel: Callable[[], Awaitable[None]]) -> None:
    try:
        await asyncio.wait_for(cancel(), timeout=CANCEL_TIMEOUT_S)
        logger.info("%s runner told to drop a job whose client left", runner)
    except Exception as exc:  # best effort: the job then runs to completion, as it would have
        logger.warning("could not cancel a job on the %s runner: %s", runner, exc)


def answers_503_when_a_runner_is_down(api: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | JSONResponse]]:
    """Wrap a public API: a RunnerUnavailable anywhere inside becomes a clear 503 instead of a 500."""

    @functools.wraps(api)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | JSONResponse:
        try:
            return await api(*args, **kwargs)
        except RunnerUnavailable as error:
            return error_response("unavailable", str(error))

    return wrapper
