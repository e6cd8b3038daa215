"""The full-size benchmark's parameter counts against the published sizes (every benchmark's smoke form, this
one's timed parts included, runs end to end in bench/smoke.py, which CI runs after the suite).

Timing targets live in bench/ (reported, not asserted); here only shapes, keys and parameter counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT_S = 300  # ~20 s on 2 idle CPU cores; generous for a loaded CI machine


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The parameter counts only (shapes on the meta device, ~2 s); the timed parts run end to end in the smoke
    stage (bench/smoke.py)."""
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "bench/fullsize.py", "--smoke", "--only", "params", "--device", "cpu", "--out", str(out)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert (out / "fullsize-smoke.md").is_file()
    return json.loads((out / "fullsize-smoke.json").read_text())


def test_the_report_names_its_run(smoke_report: dict) -> None:
    assert {"command", "date", "machine", "smoke", "device", "param_counts", "published_checks"} <= set(smoke_report)
    assert smoke_report["smoke"] is True and smoke_report["machine"]["cores"] >= 1
    assert "--smoke" in smoke_report["command"]


@pytest.mark.parametrize(
    ("model", "part", "low", "high"),
    [
        ("audioldm2-base", "unet", 330e6, 370e6),  # published ~350M
        ("audioldm2-base", "total", 1.0e9, 1.2e9),  # ~1.1B
        ("audioldm2-large", "unet", 680e6, 800e6),  # ~750M (712M in the AudioLDM2 paper)
        ("audioldm2-large", "total", 1.35e9, 1.6e9),  # ~1.5B
        ("music-flamingo", "language_model", 7.5e9, 7.7e9),  # Qwen2.5-7B: 7.61B
        ("music-flamingo", "audio_encoder", 0.6e9, 0.67e9),  # Whisper-large-v3 encoder: ~635M
        ("music-flamingo", "total", 8.1e9, 8.4e9),
    ],
)
def test_full_size_parameter_counts_match_published_sizes(
    smoke_report: dict, model: str, part: str, low: float, high: float
) -> None:
    assert low <= smoke_report["param_counts"][model][part] <= high
    assert all(check["ok"] for check in smoke_report["published_checks"]), smoke_report["published_checks"]
