"""Long-form AudioLDM2's memory: decoding a longer clip costs its output, not more activations. Serverless but
slow (a fresh process decoding 2.5 minutes of latent, 69 s alone on 2 cores), so it sits outside the unit tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# As the Bento's image sets it (bentofile.yaml): glibc then returns freed large blocks at once; with its default
# (a threshold that rises after each free) the peak RSS creeps up by fragmentation, ~100 MiB in a 120 s decode.
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def decode_peaks(*seconds: int) -> list[dict[str, float]]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "long_form.py"), "--decode-peak", *map(str, seconds)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, **ALLOCATOR},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_decoding_memory_does_not_grow_with_the_duration_beyond_the_audio() -> None:
    """How far the RSS rises while decoding, both lengths in one fresh process after a warm-up (bench/long_form.py):
    from 60 s to 90 s it grows by the audio and mel that come out, not by activations (which stay one
    batch of tiles: both lengths have full batches of `TILES_PER_CALL` tiles from 60 s on)."""
    short, long = decode_peaks(60, 90)
    output_growth = (long["audio_mib"] - short["audio_mib"]) * 1.4  # the audio, and the mel (40% of it)
    assert long["peak_growth_mib"] - short["peak_growth_mib"] < output_growth + 16
