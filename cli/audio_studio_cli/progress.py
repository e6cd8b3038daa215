"""What a job is doing while the CLI waits: a bar on a terminal, plain lines in a log."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from audio_studio import JobStatus

PLAIN_EVERY_S = 2.0  # without a terminal, at most one line this often: a CI log stays readable


class JobProgress:
    """`update` is the client's progress callback (called on its own thread). On a terminal: the phase, steps or
    tokens done of the total, a bar, the percentage and an ETA. Otherwise plain lines without control characters,
    e.g. `generating: denoising 12/25 48%`, at most one every 2 s, and one when the job ends."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last_line = 0.0
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> JobProgress:
        if self.stream.isatty():
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._bar = Progress(*columns, console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(f"{self.label}: submitted", total=1.0)
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: BaseException | TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        if kind is None:
            self._write(f"{self.label}: done in {time.monotonic() - self.started:.1f} s")

    def update(self, status: JobStatus) -> None:
        progress = status.progress
        if self._bar is not None and self._task is not None:
            counts = f" {progress.done}/{progress.total} {progress.unit or ''}".rstrip() if progress.total else ""
            self._bar.update(
                self._task, completed=progress.fraction, description=f"{self.label}: {progress.phase}{counts}"
            )
            return
        with self._lock:
            now = time.monotonic()
            if now - self._last_line < PLAIN_EVERY_S:
                return
            self._last_line = now
        self._write(f"{self.label}: {progress.line()}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
