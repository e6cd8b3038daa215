"""BentoML's adaptive batcher as the intake of a scheduler that owns the model.

BentoML 1.4.39 dispatches one batch at a time per API (its dispatcher holds a semaphore of 1 until the batch
function returns). An API marked `concurrent_batches` hands its batch to the step scheduler and awaits the
answers, so the next batch must be dispatched meanwhile, to join at the next step boundary; for those APIs the
dispatcher may have this many batches out at once. Other APIs keep BentoML's behaviour.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__audio_studio_concurrent_batches__"
BATCHES_IN_FLIGHT = 1024  # the front's queue caps bound what actually arrives


def concurrent_batches(api: F) -> F:
    """Mark a batchable API whose batches may overlap (put it under @bentoml.api)."""
    setattr(api, MARK, True)
    return api


def install() -> None:
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.marshal.dispatcher import NonBlockSema

    if getattr(ServiceAppFactory.__init__, MARK, False):
        return
    original = ServiceAppFactory.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        for name, dispatcher in self.dispatchers.items():
            if getattr(self.service.apis[name].func, MARK, False):
                dispatcher._sema = NonBlockSema(BATCHES_IN_FLIGHT)

    setattr(init, MARK, True)
    ServiceAppFactory.__init__ = init
