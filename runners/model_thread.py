"""One thread per runner that loads its model and runs every torch call of the process.

On a CPU, libgomp (PyTorch's OpenMP) gives each thread that starts a parallel region a team of its own, and
once a process holds more OpenMP threads than there are cores, every team stops spinning at its barriers and
sleeps instead. A model run from a second thread after one torch op on the first then ran at half speed (tiny
generate of a 5 s clip: 0.99-1.10 s with one team, 1.93-1.95 s after a matrix product on the main thread;
`bench/runner_cpu.py`). BentoML runs a runner's `__init__` on the worker's
main thread, which then runs the event loop, and sync APIs in a thread pool: so each runner loads on, and
sends all model work to, this one thread, and nothing else in the process touches torch. On a GPU it costs
nothing and keeps one owner of the CUDA stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class ModelThread:
    def __init__(self, name: str, cpu_threads: int = 0) -> None:
        """`cpu_threads`: torch's intra-op threads (0: torch's default). OpenMP's thread count is the calling
        thread's own, so it is set on the model thread itself."""
        self.cpu_threads = cpu_threads
        self._calls: SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)  # never holds up an exit
        self._thread.start()

    def _serve(self) -> None:
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        while True:
            fn, future = self._calls.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the caller, as an executor would
                    future.set_exception(exc)
            del fn, future  # an idle thread holds nothing: what a finished call used (an engine) can be freed

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._calls.put((fn, future))
        return future

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the model thread and wait for it (loading, in `__init__`)."""
        return self.submit(fn).result()
