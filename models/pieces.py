"""Work in pieces: a long computation on the model thread split into bounded pieces, so that whoever runs it (the
AudioLDM2 step scheduler, runners/step_scheduler.py) can run other jobs' work and drop a cancelled job between
two pieces, as it does between two denoising steps.

A plan is a generator that yields between its pieces and returns its result: `next()` runs one piece. Plans
compose with `yield from` (the pieces of the inner plan become the outer one's), and a piece may hold a context
only within itself (`within`): between two pieces other work runs on the same model and process.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

T = TypeVar("T")

Work = Generator[None, None, T]


class Pieces(Generic[T]):
    """A plan of `total` pieces, run one at a time by `step`; `result` once the last one has run."""

    def __init__(self, work: Work[T], total: int) -> None:
        self.work = work
        self.total = total
        self.done = 0
        self.finished = False
        self._result: T | None = None

    @classmethod
    def one(cls, fn: Callable[[], T]) -> Pieces[T]:
        """`fn()` as a plan of one piece (work short enough to need no cancellation point)."""

        def work() -> Work[T]:
            yield from ()
            return fn()

        return cls(work(), 1)

    def step(self) -> bool:
        """Run the next piece; True once the plan is finished."""
        try:
            next(self.work)
        except StopIteration as stop:
            self._result, self.finished = stop.value, True
        self.done += 1
        return self.finished

    @property
    def result(self) -> T:
        assert self.finished, f"{self.done} of {self.total} pieces run"
        return self._result  # type: ignore[return-value]

    def run(self) -> T:
        """Every piece still to run, at once (nothing to interleave: tests, benchmarks)."""
        while not self.step():
            pass
        return self.result

    def close(self) -> None:
        """Abandon the plan: the contexts its work holds between pieces (timed phases) end now."""
        self.work.close()


def within(context: Callable[[], AbstractContextManager[object]], work: Work[T]) -> Work[T]:
    """`work` with each of its pieces run inside a fresh `context()`, which is not held between pieces (e.g. a
    patch of the model's modules, or an allocator setting, that other jobs' work must not see)."""
    try:
        while True:
            with context():
                try:
                    next(work)
                except StopIteration as stop:
                    return stop.value
            yield
    finally:
        work.close()  # abandoned: `work`'s own contexts end now, not whenever it is collected
