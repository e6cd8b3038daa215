"""Long-form AudioLDM2 end to end in-process, as the runner serves it: clips up to the single-latent length
unchanged bit for bit, longer ones denoised as fused windows, alone or batched. Serverless but slow (~45 s: a
fresh process for the fingerprints, 40 s jobs), so it sits outside the unit tier (tests/unit/test_long_form.py
has the windows, tiles and pieces)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from models.audioldm2 import AudioLDM2Engine
from runners.audioldm2_in_process import InProcessScheduler
from schemas import GenerationJob
from tests.unit.test_long_form import LONG, denoise_passes

ROOT = Path(__file__).resolve().parent.parent


def test_clips_up_to_the_single_latent_length_are_unchanged_bit_for_bit() -> None:
    """Today's engine, run as served, against the engine before long-form generation
    (tests/single_latent_fingerprints.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.single_latent_fingerprints"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["now"] == result["before"]


def test_a_long_job_is_windowed_and_its_windows_run_together_or_one_by_one_alike(
    engine: AudioLDM2Engine, scheduled: InProcessScheduler
) -> None:
    job = GenerationJob(**LONG)
    state = engine.start_generation(job).run()
    assert len(state.windows) > 1 and state.windows.size == engine.window_frames
    [together] = scheduled.generate([job])
    engine.max_rows, saved = state.rows_per_window, engine.max_rows  # one window per UNet pass
    try:
        [one_by_one] = scheduled.generate([job])
    finally:
        engine.max_rows = saved
    assert denoise_passes(one_by_one) == len(state.windows) * LONG["steps"] > denoise_passes(together)
    assert torch.equal(together.output.latents, one_by_one.output.latents)
    assert together.output.waveforms.shape == (1, 40 * 16_000) and together.output.finite


def test_a_long_job_batched_with_others_equals_alone(scheduled: InProcessScheduler) -> None:
    long_job = GenerationJob(**LONG)
    others = [
        GenerationJob(prompt="a bell", duration=10.24, steps=2, seed=1),  # one native window: shares its passes
        GenerationJob(prompt="wind", duration=45.0, steps=3, seed=2, scheduler="ddim", guidance_scale=1.0),
    ]
    batched = scheduled.generate([others[0], long_job, others[1]])
    assert [run.group_size for run in batched] == [3, 3, 3]
    assert torch.equal(batched[1].output.latents, scheduled.generate([long_job])[0].output.latents)
