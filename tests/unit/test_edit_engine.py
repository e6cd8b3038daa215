"""Editing on the tiny AudioLDM2, run as the runner serves it (its step scheduler): an inpainted range is new and
the rest of the clip is its autoencoder round trip (a transform of strength 0), bit for bit outside the range and
its blend ramps; extensions at either end; RePaint's jumps; seeds and batch invariance. A long clip's edit, slow
for this tier: tests/test_long_form_edit.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.audioldm2 import AudioLDM2Engine, JobAudio
from runners.audioldm2_in_process import InProcessScheduler
from runners.batching import GroupRun
from schemas import EditJob, GenerationJob, RunnerJob, Scheduler, TransformJob, samples_to_bytes
from tests.unit.test_transform_engine import tone

RATE = 16_000
FRAME_S = 0.04  # one latent frame: the mask's resolution
BLEND_S = 0.25  # EditParams.blend_s's default


def edit(samples: np.ndarray, **fields) -> EditJob:
    fields = {"prompt": "a dog barking", "seed": 3, "steps": 6, **fields}
    return EditJob(samples_f32le=samples_to_bytes(samples), **fields)


def ran(run: GroupRun[JobAudio]) -> JobAudio:
    assert run.error is None and run.output is not None, run.error
    return run.output


def round_trip(scheduled: InProcessScheduler, samples: np.ndarray) -> torch.Tensor:
    """What /transform answers with strength 0: the clip through the autoencoder and the vocoder."""
    job = TransformJob(samples_f32le=samples_to_bytes(samples), prompt="any", seed=0, strength=0.0)
    return ran(scheduled.transform([job])[0]).waveforms[0]


def kept(length: int, start_s: float, end_s: float, blend_s: float = BLEND_S) -> torch.Tensor:
    """The samples outside start_s..end_s and its blend ramps (to the latent frame)."""
    seconds = torch.arange(length) / RATE
    margin = blend_s + 2 * FRAME_S  # a ramp ends in a frame, and samples interpolate between frame centres
    return (seconds < start_s - margin) | (seconds >= end_s + margin)


@pytest.mark.parametrize("scheduler", [Scheduler.DPMPP, Scheduler.DDIM])
def test_an_inpainted_range_is_new_and_the_rest_is_the_round_trip_bit_for_bit(
    scheduled: InProcessScheduler, scheduler: Scheduler
) -> None:
    clip = tone(6.0, 220)
    job = edit(clip, mode="inpaint", start_s=2.0, end_s=4.0, scheduler=scheduler)
    output = ran(scheduled.edit([job])[0]).waveforms
    assert output.shape == (1, len(clip))
    reference, out = round_trip(scheduled, clip), output[0]
    outside = kept(len(clip), 2.0, 4.0)
    assert torch.equal(out[outside], reference[outside])
    inside = slice(2 * RATE, 4 * RATE)
    assert (out[inside] - reference[inside]).abs().max() > 1e-3
    assert torch.equal(ran(scheduled.edit([job])[0]).waveforms, output)  # the same seed, the same audio
    other = ran(scheduled.edit([job.model_copy(update={"seed": 4})])[0]).waveforms
    assert not torch.equal(other[0, inside], out[inside])


def test_without_blend_only_the_range_and_its_frames_change(scheduled: InProcessScheduler) -> None:
    clip = tone(6.0, 330)
    out = ran(scheduled.edit([edit(clip, mode="inpaint", start_s=2.5, end_s=3.5, blend_s=0.0)])[0]).waveforms[0]
    changed = torch.nonzero(out != round_trip(scheduled, clip)).view(-1) / RATE
    assert changed.min() >= 2.5 - 2 * FRAME_S and changed.max() < 3.5 + 2 * FRAME_S, (changed.min(), changed.max())


@pytest.mark.parametrize(("side", "seconds"), [("end", 4.0), ("start", 4.0), ("start", 2.51)])
def test_an_extension_adds_its_seconds_and_keeps_the_clip_as_its_round_trip(
    scheduled: InProcessScheduler, side: str, seconds: float
) -> None:
    """2.51 s is no whole number of latent frames: the clip still starts on a frame of the canvas."""
    clip = tone(6.0, 440)
    added = round(seconds * RATE)
    output = ran(scheduled.edit([edit(clip, mode="extend", seconds=seconds, side=side)])[0]).waveforms[0]
    assert output.shape == (len(clip) + added,)
    reference = round_trip(scheduled, clip)
    if side == "end":
        clip_part, new = output[: len(clip)], output[len(clip) :]
        outside = kept(len(clip), 6.0, 6.0 + seconds)
    else:
        clip_part, new = output[added:], output[:added]
        outside = kept(len(clip), -seconds, 0.0)
    assert torch.equal(clip_part[outside], reference[outside])
    assert new.abs().max() > 1e-3  # sound, not the silence the canvas held there


def test_repaint_jumps_run_each_step_but_the_last_again_and_keep_the_round_trip(scheduled: InProcessScheduler) -> None:
    clip = tone(6.0, 550)
    plain, jumped = (
        ran(run)
        for run in scheduled.edit(
            [edit(clip, mode="inpaint", start_s=2.0, end_s=4.0, repaint_jumps=jumps, seed=9) for jumps in (0, 2)]
        )
    )
    outside = kept(len(clip), 2.0, 4.0)
    reference = round_trip(scheduled, clip)
    assert torch.equal(jumped.waveforms[0, outside], reference[outside])
    assert not torch.equal(jumped.waveforms, plain.waveforms)


def test_the_passes_of_an_edit_with_jumps_count_its_repeated_steps(scheduled: InProcessScheduler) -> None:
    [run] = scheduled.edit([edit(tone(3.0, 220), mode="inpaint", start_s=1.0, end_s=2.0, repaint_jumps=2)])
    [denoise] = [phase for phase in run.phases if phase.name == "denoise"]
    assert denoise.attributes["steps"] == 6 + 5 * 2  # each of 6 steps but the last, 3 times
    assert denoise.attributes["passes"] == 6 + 5 * 2


def test_an_edit_batched_with_a_generate_and_a_transform_equals_itself_alone(
    engine: AudioLDM2Engine, scheduled: InProcessScheduler
) -> None:
    clip = tone(6.0, 660)
    jobs: list[RunnerJob] = [
        GenerationJob(prompt="rain on a tin roof", duration=6.0, seed=1, steps=6),
        TransformJob(samples_f32le=samples_to_bytes(clip), prompt="a choir", seed=2, steps=6, strength=1.0),
        edit(clip, mode="inpaint", start_s=1.0, end_s=2.5, guidance_scale=5.0),
        edit(clip, mode="extend", seconds=1.0, side="start", num_waveforms=2),
    ]
    starts = {GenerationJob: engine.start_generation, TransformJob: engine.start_transform, EditJob: engine.start_edit}
    together = scheduled.run(jobs, lambda job: starts[type(job)](job))  # type: ignore[index]
    assert [run.group_size for run in together][:3] == [3, 3, 3]  # the 6 s jobs share every pass
    for job, run in zip(jobs, together, strict=True):
        [alone] = scheduled.run([job], lambda j: starts[type(j)](j))  # type: ignore[index]
        alone = ran(alone)
        assert torch.equal(ran(run).waveforms, alone.waveforms)
        assert torch.equal(ran(run).latents, alone.latents)
