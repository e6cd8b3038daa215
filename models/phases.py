"""Named model phases, timed: the engines mark them, whoever runs an engine may collect them.

The engines mark encode / denoise / decode / rank (AudioLDM2) and prepare /
prefill / decode (Music Flamingo) with the sizes that explain their duration.
A runner collects them around one group of jobs and turns them into trace
spans and metrics, and may `watch` them start (a job's live progress); outside
`collect` and `watch` a mark costs one clock read and nothing is kept. Model
code stays free of tracing and metrics libraries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

Attribute = int | float | str | bool


@dataclass(frozen=True)
class Phase:
    name: str
    start_ns: int  # wall clock (time.time_ns), as trace spans need
    end_ns: int
    attributes: dict[str, Attribute] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


_collected: ContextVar[list[Phase] | None] = ContextVar("audio_studio_phases", default=None)
_watcher: ContextVar[Callable[[str], None] | None] = ContextVar("audio_studio_phase_watcher", default=None)


@contextmanager
def collect() -> Iterator[list[Phase]]:
    """Keep every phase marked inside this block (in this thread or task), in the order they end."""
    phases: list[Phase] = []
    token = _collected.set(phases)
    try:
        yield phases
    finally:
        _collected.reset(token)


@contextmanager
def watch(started: Callable[[str], None]) -> Iterator[None]:
    """Call `started(name)` as each phase marked inside this block (in this thread or task) begins."""
    token = _watcher.set(started)
    try:
        yield
    finally:
        _watcher.reset(token)


def record(name: str, start_ns: int, end_ns: int, **attributes: Attribute) -> None:
    """A phase whose boundaries were seen elsewhere (e.g. prefill ends when the first token is scored)."""
    phases = _collected.get()
    if phases is not None:
        phases.append(Phase(name, start_ns, end_ns, attributes))


@contextmanager
def phase(name: str, **attributes: Attribute) -> Iterator[dict[str, Attribute]]:
    """Time the block as phase `name`; the block may add attributes to the dict it gets."""
    start = time.time_ns()
    started = _watcher.get()
    if started is not None:
        started(name)
    extra: dict[str, Attribute] = dict(attributes)
    try:
        yield extra
    finally:
        record(name, start, time.time_ns(), **extra)
