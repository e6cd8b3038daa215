"""The AudioLDM2 engine on the tiny model, run as the runner serves it (its step scheduler): fidelity to
diffusers, batch invariance, seeds, ranking."""

from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from models.audioldm2 import AudioLDM2Engine, JobAudio
from runners.audioldm2_in_process import InProcessScheduler
from schemas import GenerationJob, Scheduler

FAST = {"steps": 4, "duration": 2.0}


def job(prompt: str = "A hammer hitting a wooden surface", **overrides) -> GenerationJob:
    return GenerationJob(**{"prompt": prompt, "seed": 0, **FAST, **overrides})


def alone(scheduled: InProcessScheduler, j: GenerationJob) -> JobAudio:
    [run] = scheduled.generate([j])
    assert run.error is None and run.output is not None, run.error
    return run.output


@pytest.mark.parametrize("scheduler", [Scheduler.DDIM, Scheduler.DPMPP])
def test_single_job_matches_the_stock_pipeline(
    engine: AudioLDM2Engine, scheduled: InProcessScheduler, scheduler: Scheduler
) -> None:
    """The encode/denoise/decode split computes what AudioLDM2Pipeline.__call__ computes."""
    j = job(scheduler=scheduler, guidance_scale=3.5, seed=42)
    pipe = engine.pipe
    original = pipe.scheduler
    if scheduler is Scheduler.DPMPP:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
    try:
        expected = pipe(
            j.prompt,
            negative_prompt=j.negative_prompt,
            audio_length_in_s=j.duration,
            num_inference_steps=j.steps,
            guidance_scale=j.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(j.seed),
            output_type="latent",
        ).audios
    finally:
        pipe.scheduler = original
    # Same math; not bit-identical only because the engine pads rows and T5 tokens (see models/audioldm2.py).
    torch.testing.assert_close(alone(scheduled, j).latents, expected, rtol=1e-4, atol=1e-4)


def test_batched_equals_alone(scheduled: InProcessScheduler) -> None:
    """Eight jobs differing in every knob: each one's latents are exactly what it gets alone."""
    jobs = [
        job("dog", seed=1),
        job("A very long prompt about a jazz drum kit with brushes and a walking double bass line", seed=2),
        job("rain", seed=3, guidance_scale=7.0),
        job("piano", seed=4, num_waveforms=2),
        job("birds", seed=5, duration=3.0),
        job("choir", seed=6, guidance_scale=1.0),
        job("guitar", seed=7, negative_prompt="noise, hum, distortion, clipping, low quality"),
        job("crowd", seed=8, scheduler=Scheduler.DDIM),
    ]
    runs = scheduled.generate(jobs)
    # Jobs of one latent size share every UNet pass whatever their other knobs; the 3 s job runs its own.
    assert [r.group_size for r in runs] == [7, 7, 7, 7, 1, 7, 7, 7]
    for j, run in zip(jobs, runs, strict=True):
        assert run.error is None
        assert torch.equal(run.output.latents, alone(scheduled, j).latents), j.prompt


def test_same_seed_same_audio_other_seed_other_audio(scheduled: InProcessScheduler) -> None:
    first, second, other = (alone(scheduled, job(seed=seed)) for seed in (9, 9, 10))
    assert torch.equal(first.waveforms, second.waveforms)
    assert not torch.equal(first.latents, other.latents)


def test_waveform_k_is_reproducible_alone_from_seed_plus_k(scheduled: InProcessScheduler) -> None:
    several = alone(scheduled, job(seed=20, num_waveforms=3))
    for k in range(3):
        assert torch.equal(several.latents[k : k + 1], alone(scheduled, job(seed=20 + k)).latents)


def test_output_length_and_shapes(engine: AudioLDM2Engine, scheduled: InProcessScheduler) -> None:
    result = alone(scheduled, job(duration=2.5, num_waveforms=2))
    assert result.waveforms.shape == (2, int(2.5 * engine.sample_rate))
    assert engine.sample_rate == 16_000
    assert result.finite


def test_clap_ranking_scores_each_job_against_its_own_prompt(
    engine: AudioLDM2Engine, scheduled: InProcessScheduler
) -> None:
    a, b = job("dog barking", seed=1, num_waveforms=2), job("techno music", seed=5, num_waveforms=3)
    for j, run in zip([a, b], scheduled.generate([a, b]), strict=True):
        assert run.output.clap_scores == engine.clap_scores(j.prompt, run.output.waveforms)
        assert len(run.output.clap_scores) == j.num_waveforms
    assert alone(scheduled, job(num_waveforms=1)).clap_scores is None
