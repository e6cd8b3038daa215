"""quiet_imports.py: importing a runner prints none of torch's libraries' known-harmless warnings, and their
other warnings still show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

IMPORT_RUNNERS = """
import logging
import runners.audioldm, runners.audioldm2, runners.music_flamingo
logging.getLogger("torchao").warning("another torchao warning")
"""

HARMLESS = (
    "Failed to load",  # torchao's compiled kernels; bitsandbytes' CPU kernel from `kernels`
    "is an Enum subclass",  # torch.utils._pytree
    "kernels-community",  # bitsandbytes
    "Unable to import `torchao` Tensor objects",  # diffusers
)


def test_a_runner_import_prints_none_of_the_harmless_warnings_and_others_still_show() -> None:
    env = {**os.environ, "AUDIO_STUDIO_PROFILE": "tiny"}
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_RUNNERS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    printed = run.stdout + run.stderr
    assert [phrase for phrase in HARMLESS if phrase in printed] == [], printed
    assert "another torchao warning" in printed
