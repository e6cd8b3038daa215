"""models/allocator.py: which freed blocks glibc keeps, seen through glibc's own count of mapped blocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# In a process of its own (mallopt is process-wide), under the image's setting: whether a block of each size is a
# mapping of its own, by glibc's mallinfo2 count of mapped blocks, before and after the front's setting.
PROBE = """
import ctypes, json, sys
from models.allocator import keep_freed_request_buffers

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def mapped(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    after = libc.mallinfo2().hblks
    libc.free(block)
    return after > before

sizes = [256 * 1024, 2 * 1024 * 1024, 7 * 1024 * 1024, 40 * 1024 * 1024]
image = [mapped(size) for size in sizes]
keep_freed_request_buffers()
print(json.dumps({"image": image, "front": [mapped(size) for size in sizes]}))
"""


def test_the_front_keeps_blocks_under_8_mib_and_maps_larger_ones() -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    seen = json.loads(result.stdout)
    assert seen["image"] == [True, True, True, True]  # the image's 64 KiB: every one of these is a mapping
    # socket reads, form buffers, a 30 s clip's and a 2-minute clip's decoded samples reused; a long performance's
    # (10 min at 16 kHz: 38 MB) returned
    assert seen["front"] == [False, False, False, True]
