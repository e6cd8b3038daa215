"""An edit of a long clip, in-process on the tiny AudioLDM2 as the runner serves it: only the windows near the range
are denoised, and the rest of the clip is its round trip bit for bit. Serverless but slow (a 90 s clip encoded
and decoded twice, 76 s alone on 2 cores), so it sits outside the unit tier (tests/unit/test_edit_engine.py has
the rest)."""

from __future__ import annotations

import numpy as np
import torch

from models.audioldm2 import AudioLDM2Engine
from runners.audioldm2_in_process import InProcessScheduler
from tests.unit.test_edit_engine import RATE, edit, kept, ran, round_trip


def test_a_long_clip_denoises_only_the_windows_near_the_range_and_keeps_the_rest(
    engine: AudioLDM2Engine, scheduled: InProcessScheduler
) -> None:
    """5 s inpainted in the middle of 90 s: 3 of the clip's 17 windows are denoised; the rest is the round trip."""
    rng = np.random.default_rng(0)
    clip = (0.2 * rng.standard_normal(90 * RATE)).astype(np.float32)
    [run] = scheduled.edit([edit(clip, mode="inpaint", start_s=42.5, end_s=47.5, steps=2)])
    [denoise] = [phase for phase in run.phases if phase.name == "denoise"]
    every = len(engine.windows(engine.mel_frames(90.0)))
    assert denoise.attributes["windows"] < every // 4, (denoise.attributes, every)
    out, reference = ran(run).waveforms[0], round_trip(scheduled, clip)
    outside = kept(len(clip), 42.5, 47.5)
    assert torch.equal(out[outside], reference[outside])
    assert not torch.equal(out[~outside], reference[~outside])
