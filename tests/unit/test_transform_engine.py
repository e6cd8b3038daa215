"""Audio-to-audio on the tiny AudioLDM2: the strength knob's fidelity properties, seeds, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.audioldm2 import AudioLDM2Engine
from runners.batching import run_in_groups
from schemas import Scheduler, TransformJob, samples_to_bytes

RATE = 16_000


def tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * np.sin(2 * np.pi * 3 * hz * t)).astype(np.float32)


def job(samples: np.ndarray, **overrides) -> TransformJob:
    fields = {"prompt": "a jazz drum kit", "seed": 0, "steps": 10, "strength": 0.6, **overrides}
    return TransformJob(samples_f32le=samples_to_bytes(samples), **fields)


def alone(engine: AudioLDM2Engine, j: TransformJob):
    [result] = engine.transform([j])
    return result


def input_latent(engine: AudioLDM2Engine, samples: np.ndarray) -> torch.Tensor:
    return engine.encode_audio(samples, engine.mel_frames(len(samples) / RATE)).float().cpu()


@pytest.mark.parametrize("scheduler", [Scheduler.DPMPP, Scheduler.DDIM])
def test_strength_zero_is_the_autoencoder_and_vocoder_round_trip(engine: AudioLDM2Engine, scheduler) -> None:
    clip = tone(2.0, 220)
    result = alone(engine, job(clip, strength=0.0, scheduler=scheduler))
    latent = engine.encode_audio(clip, engine.mel_frames(2.0))
    assert torch.equal(result.latents, latent.float().cpu())
    assert torch.equal(result.waveforms, engine.decode(latent, len(clip)))
    assert result.waveforms.shape == (1, len(clip))


def test_strength_one_no_longer_depends_on_the_input(engine: AudioLDM2Engine) -> None:
    low, high = alone(engine, job(tone(2.0, 110), strength=1.0)), alone(engine, job(tone(2.0, 880), strength=1.0))
    assert torch.equal(low.latents, high.latents)


def test_more_strength_moves_further_from_the_input(engine: AudioLDM2Engine) -> None:
    clip = tone(3.0, 330)
    start = input_latent(engine, clip)
    distances = [(alone(engine, job(clip, strength=s)).latents - start).norm().item() for s in (0.2, 0.5, 0.8)]
    assert distances[0] < distances[1] < distances[2], distances


def test_same_seed_same_output_other_seed_other_output(engine: AudioLDM2Engine) -> None:
    clip = tone(2.0, 440)
    first, again, other = (alone(engine, job(clip, seed=s)) for s in (5, 5, 6))
    assert torch.equal(first.waveforms, again.waveforms)
    assert not torch.equal(first.latents, other.latents)


def test_output_keeps_the_input_length(engine: AudioLDM2Engine) -> None:
    clip = tone(2.345, 300)
    assert alone(engine, job(clip)).waveforms.shape == (1, len(clip))


def test_batched_equals_alone(engine: AudioLDM2Engine) -> None:
    jobs = [
        job(tone(2.0, 200), seed=1),
        job(tone(2.0, 300), seed=2, prompt="heavy rain with thunder and wind in the trees", guidance_scale=6.0),
        job(tone(2.0, 400), seed=3, strength=0.62),  # same first step as 0.6 at 10 steps: shares the pass
        job(tone(2.0, 500), seed=4, strength=0.3),
        job(tone(3.0, 600), seed=5),
        job(tone(2.0, 700), seed=6, guidance_scale=1.0),
        job(tone(2.0, 800), seed=7, negative_prompt="noise, hum, distortion, clipping"),
        job(tone(2.0, 900), seed=8, strength=0.0),
    ]
    runs = run_in_groups(jobs, engine.transform_key, engine.transform)
    assert [r.group_size for r in runs] == [4, 4, 4, 1, 1, 1, 4, 1]
    for j, run in zip(jobs, runs, strict=True):
        assert run.error is None
        assert torch.equal(run.output.latents, alone(engine, j).latents)
        assert torch.equal(run.output.waveforms, alone(engine, j).waveforms)
