"""BentoML's adaptive batcher as the intake of a scheduler that owns the model.

What it changes: `_bentoml_impl.server.app.ServiceAppFactory.__init__` is wrapped: after BentoML has built one
`CorkDispatcher` per batchable API (`self.dispatchers`), the dispatcher of each API marked `@concurrent_batches`
gets a `_sema` (the private `NonBlockSema` that gates dispatching) of BATCHES_IN_FLIGHT instead of 1.

Why: BentoML 1.4.39 dispatches one batch at a time per API (its dispatcher holds a semaphore of 1 until the batch
function returns). A marked API hands its batch to the step scheduler (runners/step_scheduler.py) and awaits the
answers, so the next batch must be dispatched meanwhile, to join at the next step boundary. Other APIs keep
BentoML's behaviour. No upstream issue. Checked range: `_bentoml_impl/server/app.py` and
`bentoml/_internal/marshal/dispatcher.py` are the same in the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.marshal.dispatcher import NonBlockSema

from compat import Patch

PATCH = Patch(
    name="bentoml_dispatcher",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML dispatches one batch at a time per API; the step scheduler needs the next batch meanwhile",
)

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__audio_studio_concurrent_batches__"
BATCHES_IN_FLIGHT = 1024  # the front's queue caps bound what actually arrives


def concurrent_batches(api: F) -> F:
    """Mark a batchable API whose batches may overlap (put it under @bentoml.api)."""
    setattr(api, MARK, True)
    return api


def install() -> None:
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
