"""The tiny profile for the benchmarks that run it, set before any project import (settings are read once, at
import), and the repository on sys.path. Each such benchmark imports it first.

A benchmark never loads the published weights: the profile is tiny unless the caller chose `random` (random-weight
folders written beforehand, e.g. full-size ones by bench/gpu.sh), which is kept, with its folder setting.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if os.environ.get("AUDIO_STUDIO_PROFILE") != "random":
    os.environ["AUDIO_STUDIO_PROFILE"] = "tiny"
PROFILE = os.environ["AUDIO_STUDIO_PROFILE"]
os.environ.setdefault("AUDIO_STUDIO_TINY_MODEL_DIR", str(ROOT / ".cache" / "tiny-models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
