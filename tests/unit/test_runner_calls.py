"""core/runner_calls.py against a real aiohttp server on 127.0.0.1 that dies while answering, as a runner killed
mid-response does: the call is resent, never a 500."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from core.runner_calls import RunnerUnavailable, call_runner

BODY = b"x" * 64_000


async def _cut_then_whole(cuts: int) -> tuple[web.AppRunner, str, list[int]]:
    """A server whose first `cuts` answers stop after their headers and a few bytes; later answers are whole."""
    answered: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        answered.append(len(answered))
        response = web.StreamResponse(headers={"Content-Length": str(len(BODY))})
        await response.prepare(request)
        if len(answered) <= cuts:
            await response.write(BODY[:100])
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(BODY)
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/", answered


async def _call(cuts: int) -> tuple[bytes | Exception, int, int]:
    server, url, answered = await _cut_then_whole(cuts)
    dropped = 0

    def on_dropped() -> None:
        nonlocal dropped
        dropped += 1

    try:
        async with aiohttp.ClientSession() as session:

            async def fetch() -> bytes:
                async with session.get(url) as response:
                    return await response.read()

            try:
                result: bytes | Exception = await call_runner("test", fetch, on_dropped)
            except RunnerUnavailable as exc:
                result = exc
    finally:
        await server.cleanup()
    return result, len(answered), dropped


def test_an_answer_cut_short_is_sent_again() -> None:
    result, answered, dropped = asyncio.run(_call(cuts=1))
    assert result == BODY
    assert (answered, dropped) == (2, 1)


def test_answers_cut_short_every_time_are_a_runner_unavailable() -> None:
    result, answered, dropped = asyncio.run(_call(cuts=10))
    assert isinstance(result, RunnerUnavailable)
    assert "retry later" in str(result)
    assert (answered, dropped) == (3, 2)


def test_a_whole_answer_is_returned_once() -> None:
    assert asyncio.run(_call(cuts=0)) == (BODY, 1, 0)
