"""BentoML's adaptive batcher as the intake of a scheduler that owns the model, and a batcher that waits for its
batch in flight instead of polling.

What it changes: `_bentoml_impl.server.app.ServiceAppFactory.__init__` is wrapped. After BentoML has built one
`CorkDispatcher` per batchable API (`self.dispatchers`), each dispatcher gets
- a `_sema` (the private `NonBlockSema` that gates dispatching) that also signals its release: of
  BATCHES_IN_FLIGHT for an API marked `@concurrent_batches`, of 1 (BentoML's own) for the others;
- its own `controller` (`wait_for_the_batch_in_flight`): BentoML's, trained the same way and deciding the same
  batches, except that while a batch is in flight and requests wait, it sleeps until that batch ends (or the first
  waiting request's latency budget, or 100 ms) instead of 1 ms at a time.

Why: BentoML 1.4.39 dispatches one batch at a time per API (its dispatcher holds a semaphore of 1 until the batch
function returns). A marked API hands its batch to the step scheduler (runners/step_scheduler.py) and awaits the
answers, so the next batch must be dispatched meanwhile, to join at the next step boundary. And while a batch
runs with requests queued behind it, BentoML's controller wakes the runner's event loop every millisecond: a
thousand wake-ups a second that take the GIL and a core from the model thread. Measured with an asyncio loop
sleeping 1 ms in the model's process, a batch of 4 tiny-profile critiques took 256 ms against 230 ms without it
(median of 6, 2 cores; generate 800 against 769 ms), bench/README.md.

No upstream issue. Checked range: `_bentoml_impl/server/app.py` and `bentoml/_internal/marshal/dispatcher.py` are
the same in the 1.4.40 wheel as in 1.4.39; tests/unit/test_compat.py pins the controller's source.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import types
from collections.abc import Callable
from typing import Any, TypeVar

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.marshal.dispatcher import NonBlockSema

from compat import Patch

PATCH = Patch(
    name="bentoml_dispatcher",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML dispatches one batch at a time per API, and polls every 1 ms while a batch runs",
)

logger = logging.getLogger("bentoml.audio_studio")

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__audio_studio_concurrent_batches__"
BATCHES_IN_FLIGHT = 1024  # the front's queue caps bound what actually arrives
LONGEST_WAIT_S = 0.1  # a waiting controller looks at its queue at least this often (BentoML: every 1 ms)


def concurrent_batches(api: F) -> F:
    """Mark a batchable API whose batches may overlap (put it under @bentoml.api)."""
    setattr(api, MARK, True)
    return api


class SignallingSema(NonBlockSema):
    """BentoML's dispatch semaphore that also wakes whoever waits for it to be released."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.released = asyncio.Event()

    def release(self) -> None:
        super().release()
        self.released.set()

    async def wait_released(self, timeout_s: float) -> None:
        """Until the next release, or `timeout_s`; called right after `is_locked()` said so, with no await between."""
        self.released.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.released.wait(), max(0.0, timeout_s))


async def wait_for_the_batch_in_flight(self: Any) -> None:
    """`CorkDispatcher.controller` of BentoML 1.4.39, with one change (marked): the batches are the same."""
    try:
        await self.train_optimizer(self.optimizer.N_SKIPPED_SAMPLE, self.optimizer.N_SKIPPED_SAMPLE + 6, 1)
        for requests, batch_size in ((6, 1), (5, 2), (3, 3)):
            await self.train_optimizer(requests, 1, batch_size)
            self.optimizer.trigger_refresh()
        if self.optimizer.o_a + self.optimizer.o_b >= self.max_latency:
            logger.warning("BentoML has detected that a service has a max latency that is likely too low for serving.")
    except Exception:
        logger.exception("Error training optimizer")
    while True:
        try:
            async with self._wake_event:  # block until there's any request in queue
                await self._wake_event.wait_for(self._queue.__len__)
            n = len(self._queue)
            dt = self.TICKET_INTERVAL
            decay = 0.95  # the decay rate of wait time
            now = time.time()
            w0 = now - self._queue[0].enqueue_time  # the wait time of the first request
            wn = now - self._queue[-1].enqueue_time  # the wait time of the last request
            a, b = self.optimizer.o_a, self.optimizer.o_b
            latency_0 = w0 + a * n + b  # the estimated latency of the first request if we began processing now
            if n > 1 and latency_0 >= self.max_latency:
                self._queue.popleft().future.cancel()
                continue
            if self._sema.is_locked():
                if n == 1 and w0 >= self.max_latency:
                    self._queue.popleft().future.cancel()
                    continue
                # The change: until the batch in flight ends, or the first request's budget is spent.
                budget = self.max_latency - (latency_0 if n > 1 else w0)
                await self._sema.wait_released(min(budget, LONGEST_WAIT_S))
                continue
            if n < self.max_batch_size and n * (wn + dt + (a or 0)) <= self.optimizer.wait * decay:
                await asyncio.sleep(self.TICKET_INTERVAL)
                continue
            self._sema.acquire()
            inputs_info = tuple(self._get_inputs())
            self._loop.create_task(self.outbound_call(inputs_info))
        except Exception:
            logger.exception("Error processing batch requests")


def install() -> None:
    if getattr(ServiceAppFactory.__init__, MARK, False):
        return
    original = ServiceAppFactory.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        for name, dispatcher in self.dispatchers.items():
            concurrent = getattr(self.service.apis[name].func, MARK, False)
            dispatcher._sema = SignallingSema(BATCHES_IN_FLIGHT if concurrent else 1)
            dispatcher.controller = types.MethodType(wait_for_the_batch_in_flight, dispatcher)

    setattr(init, MARK, True)
    ServiceAppFactory.__init__ = init
