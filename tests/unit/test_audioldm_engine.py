"""AudioLDM (v1), the second generation family, in-process on its tiny random-weight twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AudioLDMPipeline

from models.audioldm import AudioLDMEngine
from models.profiles import audioldm_checkpoint
from runners.batching import run_in_groups
from schemas import GenerationJob, Scheduler
from settings import SETTINGS


@pytest.fixture(scope="module")
def path() -> str:
    return str(audioldm_checkpoint(SETTINGS, None).path)


@pytest.fixture(scope="module")
def engine(path: str) -> AudioLDMEngine:
    pipe = AudioLDMPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return AudioLDMEngine(pipe)


def job(prompt: str, seed: int, **knobs: object) -> GenerationJob:
    return GenerationJob(prompt=prompt, seed=seed, **{"duration": 2.0, "steps": 3, **knobs})


def test_a_single_job_equals_diffusers_stock_pipeline_on_the_same_weights(path: str, engine: AudioLDMEngine) -> None:
    [ours] = engine.generate([job("a dog barking", 1, scheduler=Scheduler.DDIM)])
    stock = AudioLDMPipeline.from_pretrained(path)  # its own DDIM scheduler, as saved
    stock.set_progress_bar_config(disable=True)
    expected = stock(
        "a dog barking",
        negative_prompt="Low quality.",
        audio_length_in_s=2.0,
        num_inference_steps=3,
        guidance_scale=3.5,
        generator=torch.Generator().manual_seed(1),
    ).audios
    assert ours.finite and ours.audio.shape == (1, 32_000)
    assert np.array_equal(ours.audio, expected)


def test_a_job_batched_with_others_gives_what_it_gives_alone(engine: AudioLDMEngine) -> None:
    """Up to the CPU kernels' rounding at another batch size (models/audioldm.py)."""
    alone = engine.generate([job("rain on a tin roof", 5, num_waveforms=2)])[0].audio
    batched = engine.generate(
        [
            job("a long prompt about a distant thunderstorm over the sea", 9, num_waveforms=2),
            job("rain on a tin roof", 5, num_waveforms=2),
        ]
    )[1].audio
    assert np.abs(batched - alone).max() <= 1e-4 * np.abs(alone).max()
    assert not np.allclose(batched[0], batched[1])  # seed and seed + 1 are two candidates


def test_jobs_of_another_shape_run_in_their_own_call(engine: AudioLDMEngine) -> None:
    jobs = [job("a", 1), job("b", 2, duration=3.0), job("c", 3)]
    steps: list[int] = []
    runs = run_in_groups(jobs, engine.group_key, lambda group: engine.generate(group, steps.append))
    assert [run.group_size for run in runs] == [2, 1, 2]
    assert [run.output.audio.shape[1] for run in runs] == [32_000, 48_000, 32_000]  # type: ignore[union-attr]
    assert steps == [1, 2, 3, 1, 2, 3]  # progress: one count per denoising step of each call
