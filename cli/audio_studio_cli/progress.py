"""Feedback while waiting: the server says nothing until the audio or text is ready, seconds to minutes later."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

# Without a terminal (CI logs), a line this often shows the command is alive; some CI kill silent jobs.
HEARTBEAT_S = 30.0


@contextmanager
def waiting(label: str, stream: TextIO | None = None) -> Iterator[None]:
    """A spinner with elapsed time on a terminal; plain lines (no control characters) otherwise."""
    stream = stream or sys.stderr
    started = time.monotonic()
    with _spinner(label, stream) if stream.isatty() else _plain_lines(label, stream, started):
        yield
    stream.write(f"{label}... done in {time.monotonic() - started:.1f} s\n")
    stream.flush()


@contextmanager
def _spinner(label: str, stream: TextIO) -> Iterator[None]:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=stream), transient=True) as progress:
        progress.add_task(f"{label}...", total=None)
        yield


@contextmanager
def _plain_lines(label: str, stream: TextIO, started: float) -> Iterator[None]:
    stream.write(f"{label}...\n")
    stream.flush()
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(HEARTBEAT_S):
            stream.write(f"{label}... {time.monotonic() - started:.0f} s\n")
            stream.flush()

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
