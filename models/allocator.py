"""When glibc gives freed memory back to the system: at once while long audio is decoded, not while denoising.

The image sets MALLOC_MMAP_THRESHOLD_=65536 (bentofile.yaml): every block over 64 KiB is its own mapping,
returned when freed, so a process's peak memory follows what it holds. Decoding a long clip needs that: tiles
and chunks of changing sizes fragment glibc's heap, and a 120 s decode raised the RSS by 192 MiB with glibc's
default against 127 MiB with 64 KiB (`bench/long_form.py --decode-peak 120`, tiny profile, after a warm-up).
The denoising loop pays for it instead: every activation is a fresh mapping whose pages fault in again, and a
tiny-profile generate took about twice as long (2.20-2.59 vs 0.99-1.10 s, `bench/runner_cpu.py`). So a runner keeps
freed blocks for reuse (`keep_freed_memory`, at start) and returns them only inside `returning_freed_memory`
(long decodes and encodes). mallopt is process-wide. Without glibc these do nothing.

The front has no denoising loop but moves request bodies and audio: every socket read (256 KiB), the HTTP parser's
body buffer, each form part, the decoded clip and its copy on the way to a runner passed through fresh mappings, and
on this project's 2-core VMs a page fault costs about 4 us. Receiving a 5.3 MB upload cost the front 27 ms of CPU,
most of it page faults, 18 ms with blocks under 1 MiB kept; decoding that 30 s 44.1 kHz stereo WAV and pickling
its 1.9 MB of 16 kHz samples for the runner took 20.2 ms (2214 faults) with 1 MiB, 10.9 ms (none) with 8 MiB.
`keep_freed_request_buffers` (the front, at start) keeps blocks under 8 MiB for reuse: a 2-minute clip's decoded
samples (7.7 MB) and everything smaller. Larger blocks (a long performance's 38 MB, long answers) still return at
once, and the heap's top is trimmed past 16 MiB, so the front's memory still follows what it holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
RETURNING_BYTES = 64 * 1024  # as the image's MALLOC_MMAP_THRESHOLD_
KEEPING_BYTES = 32 * 1024 * 1024  # the ceiling of glibc's own dynamic threshold on 64-bit machines
REQUEST_BUFFER_BYTES = 8 * 1024 * 1024  # above a 2-minute clip decoded to 16 kHz float32 (7.7 MB)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


_LIBC = _libc()


def _mmap_threshold(size: int) -> None:
    """Blocks of `size` bytes and more are mappings of their own; the heap's top is trimmed past twice that
    (the ratio glibc keeps when it moves the threshold itself)."""
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, size)
        _LIBC.mallopt(M_TRIM_THRESHOLD, 2 * size)


def keep_freed_memory() -> None:
    _mmap_threshold(KEEPING_BYTES)


def keep_freed_request_buffers() -> None:
    _mmap_threshold(REQUEST_BUFFER_BYTES)


@contextmanager
def returning_freed_memory() -> Iterator[None]:
    _mmap_threshold(RETURNING_BYTES)
    try:
        yield
    finally:
        keep_freed_memory()
