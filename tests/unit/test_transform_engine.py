"""Audio-to-audio on the tiny AudioLDM2, run as the runner serves it (its step scheduler): the strength knob's
fidelity properties, seeds, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.audioldm2 import AudioLDM2Engine, JobAudio
from runners.audioldm2_in_process import InProcessScheduler
from schemas import Scheduler, TransformJob, samples_to_bytes

RATE = 16_000


def tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * np.sin(2 * np.pi * 3 * hz * t)).astype(np.float32)


def job(samples: np.ndarray, **overrides) -> TransformJob:
    fields = {"prompt": "a jazz drum kit", "seed": 0, "steps": 10, "strength": 0.6, **overrides}
    return TransformJob(samples_f32le=samples_to_bytes(samples), **fields)


def alone(scheduled: InProcessScheduler, j: TransformJob) -> JobAudio:
    [run] = scheduled.transform([j])
    assert run.error is None and run.output is not None, run.error
    return run.output


def input_latent(engine: AudioLDM2Engine, samples: np.ndarray) -> torch.Tensor:
    return engine.encode_audio(samples, engine.mel_frames(len(samples) / RATE)).run().float().cpu()


@pytest.mark.parametrize("scheduler", [Scheduler.DPMPP, Scheduler.DDIM])
def test_strength_zero_is_the_autoencoder_and_vocoder_round_trip(
    engine: AudioLDM2Engine, scheduled: InProcessScheduler, scheduler: Scheduler
) -> None:
    clip = tone(2.0, 220)
    result = alone(scheduled, job(clip, strength=0.0, scheduler=scheduler))
    latent = engine.encode_audio(clip, engine.mel_frames(2.0)).run()
    assert torch.equal(result.latents, latent.float().cpu())
    assert torch.equal(result.waveforms, engine.decode(latent, len(clip)).run())
    assert result.waveforms.shape == (1, len(clip))


def test_strength_one_no_longer_depends_on_the_input(scheduled: InProcessScheduler) -> None:
    low, high = (alone(scheduled, job(tone(2.0, hz), strength=1.0)) for hz in (110, 880))
    assert torch.equal(low.latents, high.latents)


def test_more_strength_moves_further_from_the_input(engine: AudioLDM2Engine, scheduled: InProcessScheduler) -> None:
    clip = tone(3.0, 330)
    start = input_latent(engine, clip)
    distances = [(alone(scheduled, job(clip, strength=s)).latents - start).norm().item() for s in (0.2, 0.5, 0.8)]
    assert distances[0] < distances[1] < distances[2], distances


def test_same_seed_same_output_other_seed_other_output(scheduled: InProcessScheduler) -> None:
    clip = tone(2.0, 440)
    first, again, other = (alone(scheduled, job(clip, seed=s)) for s in (5, 5, 6))
    assert torch.equal(first.waveforms, again.waveforms)
    assert not torch.equal(first.latents, other.latents)


def test_output_keeps_the_input_length(scheduled: InProcessScheduler) -> None:
    clip = tone(2.345, 300)
    assert alone(scheduled, job(clip)).waveforms.shape == (1, len(clip))


def test_batched_equals_alone(scheduled: InProcessScheduler) -> None:
    jobs = [
        job(tone(2.0, 200), seed=1),
        job(tone(2.0, 300), seed=2, prompt="heavy rain with thunder and wind in the trees", guidance_scale=6.0),
        job(tone(2.0, 400), seed=3, strength=0.62),
        job(tone(2.0, 500), seed=4, strength=0.3),
        job(tone(3.0, 600), seed=5),
        job(tone(2.0, 700), seed=6, guidance_scale=1.0),
        job(tone(2.0, 800), seed=7, negative_prompt="noise, hum, distortion, clipping"),
        job(tone(2.0, 900), seed=8, strength=0.0),
    ]
    runs = scheduled.transform(jobs)
    # The 2 s clips share their passes whatever their strength (their first step); the 3 s clip runs its own, and
    # strength 0 runs no step at all.
    assert [r.group_size for r in runs] == [6, 6, 6, 6, 1, 6, 6, 0]
    for j, run in zip(jobs, runs, strict=True):
        assert run.error is None
        expected = alone(scheduled, j)
        assert torch.equal(run.output.latents, expected.latents)
        assert torch.equal(run.output.waveforms, expected.waveforms)
