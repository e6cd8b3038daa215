"""`bentoml serve` as a new user first meets it: started without a profile on a machine that reaches no weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import _free_port

ROOT = Path(__file__).resolve().parent.parent


def test_serving_without_a_profile_and_without_weights_exits_with_a_few_lines(tmp_path: Path) -> None:
    """BentoML resolves the declared weights before any code of ours runs; that used to print 132 lines of
    Hugging Face traceback. Now: what failed, what to do, and AUDIO_STUDIO_PROFILE=tiny."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",  # no network, as on a machine without one
        "HF_HOME": str(tmp_path / "hf"),
        "BENTOML_HF_CACHE_DIR": str(tmp_path / "hf"),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
    }
    env.pop("AUDIO_STUDIO_PROFILE")
    serve = [sys.executable, "-m", "bentoml", "serve", "service:AudioStudio", "--host", "127.0.0.1", "--port"]
    run = subprocess.run([*serve, str(_free_port())], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in log, log
    assert "audio-studio cannot start: no weights of cvssp/audioldm2 are reachable" in log
    assert "AUDIO_STUDIO_PROFILE=tiny bentoml serve service:AudioStudio" in log
    assert len(log.strip().splitlines()) == 4, log  # nothing else: see quiet_imports.py
