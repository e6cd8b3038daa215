"""AudioLDM (v1) through diffusers' own `AudioLDMPipeline`: the jobs of one shape share one pipeline call.

AudioLDM conditions its UNet on CLAP's text embedding alone (padded to the tokenizer's fixed length, no
cross-attention), and one CPU generator per waveform makes a job's noise the same in any batch, so a job batched
with others gives what it gives alone up to float rounding: the CPU kernels of the UNet, VAE and vocoder round
differently at another batch size (about 3e-6 of the peak on the tiny model; AudioLDM2's step scheduler pays
for bit-exactness, this family does not).

What it does not do, and why: no audio-to-audio (the pipeline has no strength; AudioLDM2's latent recipe
could be ported, it is not yet), no long-form beyond one latent (the windows of runners/step_scheduler.py
drive AudioLDM2's engine), and no CLAP ranking (the checkpoints carry CLAP's text tower only), so several
candidates come back in seed order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AudioLDMPipeline

from models.audioldm2 import SCHEDULERS, waveform_seeds
from models.memory import Placement, UnsupportedMemoryOption
from schemas import GenerationJob


@dataclass(frozen=True)
class Waveforms:
    """One job's waveforms, rows in seed order (`waveform_seeds`)."""

    audio: np.ndarray  # (num_waveforms, samples), float32
    finite: bool


def load_placed_audioldm(path: str, placement: Placement) -> AudioLDMPipeline:
    """The pipeline on its device and dtype, offloaded and with sliced attention as `placement` asks."""
    options = placement.options
    if options.quantization != "none":
        raise UnsupportedMemoryOption(f"AudioLDM: quantization {options.quantization!r} is not supported; use none")
    pipe = AudioLDMPipeline.from_pretrained(path, torch_dtype=placement.dtype)
    pipe.set_progress_bar_config(disable=True)
    if options.offload == "model":
        pipe.enable_model_cpu_offload()
    elif options.offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.to(placement.device)
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    return pipe


class AudioLDMEngine:
    def __init__(self, pipe: AudioLDMPipeline) -> None:
        self.pipe = pipe
        self.sample_rate = int(pipe.vocoder.config.sampling_rate)

    @staticmethod
    def group_key(job: GenerationJob) -> Hashable:
        """Jobs that can share one pipeline call: everything but the prompts and seeds."""
        return (job.duration, job.steps, job.scheduler, job.guidance_scale, job.num_waveforms)

    def generate(self, jobs: list[GenerationJob], on_step: Callable[[int], None] | None = None) -> list[Waveforms]:
        """One group's jobs in one call; `on_step(done)` after each denoising step."""
        first = jobs[0]
        self.pipe.scheduler = SCHEDULERS[first.scheduler].from_config(self.pipe.scheduler.config)
        generators = [torch.Generator().manual_seed(seed) for job in jobs for seed in waveform_seeds(job)]
        with torch.no_grad():
            audio = self.pipe(
                prompt=[job.prompt for job in jobs],
                negative_prompt=[job.negative_prompt for job in jobs],
                audio_length_in_s=first.duration,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance_scale,
                num_waveforms_per_prompt=first.num_waveforms,
                generator=generators,
                callback=None if on_step is None else lambda step, timestep, latents: on_step(step + 1),
                output_type="np",
            ).audios
        rows = first.num_waveforms
        return [
            Waveforms(part.astype(np.float32), bool(np.isfinite(part).all()))
            for part in (audio[index * rows : (index + 1) * rows] for index in range(len(jobs)))
        ]
