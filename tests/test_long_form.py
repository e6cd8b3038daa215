"""Long-form AudioLDM2: clips up to the single-latent length unchanged, longer ones denoised as fused windows."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.audioldm2 import AudioLDM2Engine
from models.multidiffusion import Fusion, Windows, split
from schemas import GenerationJob, TransformJob, samples_to_bytes

SINGLE_LATENT_OUTPUTS = Path(__file__).parent / "data" / "single_latent_outputs.json"


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()


def test_clips_up_to_the_single_latent_length_are_unchanged_bit_for_bit(engine: AudioLDM2Engine) -> None:
    """The fingerprints were taken from the engine before long-form generation existed (commit 4109732, this
    machine's CPU and torch build): 2 s with two ranked waveforms, 10 s DDIM without guidance, 30 s (the
    longest single latent) and a 3 s transform."""
    recorded = json.loads(SINGLE_LATENT_OUTPUTS.read_text())
    for case in recorded["generate"]:
        [result] = engine.generate([GenerationJob(**case["job"])])
        assert (digest(result.latents), digest(result.waveforms)) == (case["latents"], case["waveforms"]), case["job"]
        assert result.clap_scores == case["clap_scores"]
    clip = (0.2 * np.sin(2 * np.pi * 220 * np.arange(48_000) / 16_000)).astype(np.float32)
    for case in recorded["transform"]:
        [result] = engine.transform([TransformJob(**case["job"], samples_f32le=samples_to_bytes(clip))])
        assert (digest(result.latents), digest(result.waveforms)) == (case["latents"], case["waveforms"]), case["job"]


def windows_of(frames: int, size: int = 8, overlap: int = 4) -> Windows:
    return Windows(frames, size, overlap)


@pytest.mark.parametrize(("frames", "size", "overlap"), [(8, 8, 0), (9, 8, 4), (30, 8, 4), (100, 16, 8), (64, 16, 1)])
def test_windows_cover_every_frame_with_no_gap_wider_than_the_stride(frames: int, size: int, overlap: int) -> None:
    windows = Windows(frames, size, overlap)
    starts = windows.starts
    assert starts[0] == 0 and starts[-1] == frames - size
    assert all(0 < b - a <= size - overlap for a, b in itertools.pairwise(starts))


def test_fusion_is_the_weighted_average_of_the_windows_covering_each_frame() -> None:
    """A stand-in denoiser that answers window i with the constant i: the fused value at each frame is known."""
    windows = windows_of(30)
    latents = torch.zeros(2, 3, 30, 4, dtype=torch.float64)
    fusion = Fusion(latents, windows)
    rows = latents.shape[0]
    fusion.add(torch.cat([torch.full((rows, 3, 8, 4), float(i), dtype=torch.float64) for i in range(len(windows))]))
    weight = windows.weights(torch.device("cpu"), torch.float64)
    expected = torch.zeros(30, dtype=torch.float64)
    norm = torch.zeros(30, dtype=torch.float64)
    for i, start in enumerate(windows.starts):
        expected[start : start + 8] += i * weight
        norm[start : start + 8] += weight
    torch.testing.assert_close(fusion.result()[0, 0, :, 0], expected / norm, rtol=0, atol=1e-12)


def test_fusing_a_latents_own_windows_gives_it_back_however_they_arrive() -> None:
    latents = torch.randn(2, 8, 50, 16, generator=torch.Generator().manual_seed(0))
    windows = windows_of(50, 16, 8)
    whole = Fusion(latents, windows)
    whole.add(split(latents, windows))
    piecewise = Fusion(latents, windows)
    for first in range(len(windows)):  # one window per pass, as a long job's step spread over iterations
        piecewise.add(split(latents, windows, first, first + 1))
    assert torch.equal(whole.result(), piecewise.result())
    torch.testing.assert_close(whole.result(), latents, rtol=1e-6, atol=1e-6)


LONG = {"prompt": "a slow pad with rain", "duration": 40.0, "steps": 2, "seed": 5, "guidance_scale": 3.0}


def test_a_long_job_is_windowed_and_its_windows_run_together_or_one_by_one_alike(engine: AudioLDM2Engine) -> None:
    job = GenerationJob(**LONG)
    state = engine.start_generation(job)
    assert len(state.windows) > 1 and state.windows.size == engine.window_frames
    together = engine.generate([job])[0]
    rows_per_window = state.rows_per_window
    engine.max_rows, saved = rows_per_window, engine.max_rows  # one window per UNet pass
    try:
        one_by_one = engine.generate([job])[0]
    finally:
        engine.max_rows = saved
    assert torch.equal(together.latents, one_by_one.latents)
    assert together.waveforms.shape == (1, 40 * 16_000) and together.finite


def test_a_long_job_batched_with_others_equals_alone(engine: AudioLDM2Engine) -> None:
    long_job = GenerationJob(**LONG)
    others = [
        GenerationJob(prompt="a bell", duration=10.24, steps=2, seed=1),  # one native window: shares its passes
        GenerationJob(prompt="wind", duration=45.0, steps=3, seed=2, scheduler="ddim", guidance_scale=1.0),
    ]
    batched = engine.generate([others[0], long_job, others[1]])[1]
    assert torch.equal(batched.latents, engine.generate([long_job])[0].latents)
