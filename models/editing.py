"""Editing a clip in AudioLDM2's latent space: regenerate a time range (inpaint) or add audio at either end
(extend). Both are one code path: the clip's latents placed on a canvas of latent frames (with room where
audio is added), and a mask over those frames (1 where the model writes, 0 where the clip stays, linear ramps
of `blend_s` between).

At every step the model denoises the whole canvas; the kept frames are then replaced by the clip's latents
noised to the level the step ended at (RePaint, Lugmayr et al. 2022; blended latent diffusion, Avrahami et al.
2023; diffusers' inpainting pipelines blend the same way), and after the last step by the clip's latents
themselves. With `repaint_jumps` each step but the last is run 1 + jumps times: after all but the last run
the latents are noised back to the step's start level (RePaint's resampling), so that the new frames and the
kept ones agree.

The output is the clip's autoencoder round trip (what a transform of strength 0 answers) with the decoded
edit crossfaded in where the mask is above 0: the VAE's attention sees the whole latent it decodes, so
decoding the whole edited canvas would change the kept audio too. Only a crop around the written frames is
decoded for the edit, and only the MultiDiffusion windows that overlap them are denoised.

Every coefficient is a host number computed once per job, from the scheduler's own `alphas_cumprod`; nothing
reads a device value. The ops are the job's own, so its audio does not depend on the other jobs of a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from models.batched_steps import Schedule
from schemas import EditSpan

DECODE_MARGIN_S = 1.0  # context the edit's decoder sees on each side of the written frames


@dataclass(frozen=True)
class Layout:
    """Where the clip and the output lie on the canvas, in canvas samples (latent frames of `frame_samples`).

    The clip starts on a frame boundary, so its latents are the ones a transform encodes; audio added before it
    starts `lead` samples into the canvas (the canvas is whole frames)."""

    frame_samples: int
    frames: int
    clip_frame: int  # the canvas frame the clip's first latent frame lands on
    clip_samples: int
    lead: int  # canvas samples before the output's first
    total_samples: int  # the output's length
    span: EditSpan  # in output time

    @classmethod
    def of(cls, span: EditSpan, clip_samples: int, sample_rate: int, frame_samples: int, clip_frames: int) -> Layout:
        total = span.total_samples(sample_rate)
        # An extension at the start: the output is longer than the clip and its regenerated span begins it.
        added_before = total - clip_samples if span.start_s == 0.0 and total > clip_samples else 0
        clip_frame = math.ceil(added_before / frame_samples)
        lead = clip_frame * frame_samples - added_before
        frames = max(clip_frame + clip_frames, math.ceil((lead + total) / frame_samples))
        return cls(frame_samples, frames, clip_frame, clip_samples, lead, total, span)

    def mask(self, blend_s: float, sample_rate: int) -> torch.Tensor:
        """(1, 1, frames, 1) float32: 1 on every frame that overlaps the span, ramping linearly to 0 over `blend_s`
        seconds outside it (the ramps lie in the kept audio: the span itself is regenerated whole)."""
        seconds = self.frame_samples / sample_rate
        first = torch.arange(self.frames, dtype=torch.float64) * seconds - self.lead / sample_rate  # output time
        outside = torch.clamp(torch.maximum(self.span.start_s - (first + seconds), first - self.span.end_s), min=0.0)
        mask = torch.clamp(1.0 - outside / blend_s, min=0.0) if blend_s > 0 else (outside == 0).to(torch.float64)
        return mask.float().view(1, 1, self.frames, 1)

    def crop(self, mask: torch.Tensor, sample_rate: int) -> tuple[int, int]:
        """The frames the edit's decoder sees: those the mask writes, and DECODE_MARGIN_S on each side."""
        first, last = written_frames(mask)
        margin = math.ceil(DECODE_MARGIN_S * sample_rate / self.frame_samples)
        return max(0, first - margin), min(self.frames, last + margin)

    def assemble(
        self, round_trip: torch.Tensor, edited: torch.Tensor, crop: tuple[int, int], mask: torch.Tensor
    ) -> torch.Tensor:
        """The output: `round_trip` (the clip's, 1 x clip samples) with `edited` (rows x the crop's samples)
        crossfaded in by the mask, interpolated from frame centres to samples."""
        canvas = np.arange(self.lead, self.lead + self.total_samples)
        centres = (np.arange(self.frames) + 0.5) * self.frame_samples
        weight = torch.from_numpy(np.interp(canvas, centres, mask.view(-1).double().numpy())).float()
        kept = torch.zeros(self.total_samples)
        at = self.clip_frame * self.frame_samples - self.lead  # the clip's first sample in the output
        kept[at : at + self.clip_samples] = round_trip[0, : self.total_samples - at]
        start = crop[0] * self.frame_samples - self.lead
        new = torch.zeros(edited.shape[0], self.total_samples)
        low, high = max(0, start), min(self.total_samples, start + edited.shape[1])
        new[:, low:high] = edited[:, low - start : high - start]
        return weight * new + (1 - weight) * kept


def written_frames(mask: torch.Tensor) -> tuple[int, int]:
    """The first and one past the last latent frame the model writes (mask > 0); `mask` is on the host."""
    written = torch.nonzero(mask.view(-1) > 0).view(-1).tolist()
    return written[0], written[-1] + 1


def resampled(schedule: Schedule, jumps: int) -> tuple[Schedule, tuple[int, ...]]:
    """`schedule` with each step but the last run 1 + jumps times; and per entry, the step it runs."""
    last = len(schedule.timesteps) - 1
    origin = tuple(i for i in range(last + 1) for _ in range(1 if i == last else 1 + jumps))
    repeated = Schedule(
        schedule.prediction,
        tuple(schedule.timesteps[i] for i in origin),
        tuple(schedule.updates[i] for i in origin),
        tuple(schedule.coefficients[i] for i in origin),
    )
    return repeated, origin


@dataclass(eq=False)
class Keep:
    """What an edit keeps, and how each entry of its schedule hands over to the next (see the module's doc)."""

    layout: Layout
    clip_latents: torch.Tensor  # (1, channels, clip frames, bins): the clip's, as a transform encodes them
    known: torch.Tensor  # (1, channels, frames, bins): the clip's latents on the canvas, 0 elsewhere
    noise: torch.Tensor  # (waveforms, channels, frames, bins): each waveform's initial noise
    host_mask: torch.Tensor  # (1, 1, frames, 1): 1 where the model writes
    mask: torch.Tensor  # the same on the device, in the latents' dtype
    schedule: Schedule  # the job's, with RePaint's repeats
    origin: tuple[int, ...]  # per entry of `schedule`, the step of the plain schedule it runs
    levels: tuple[tuple[float, float], ...]  # per plain step: sqrt(alpha_bar), sqrt(1 - alpha_bar) at its start
    generator: torch.Generator  # the jumps' fresh noise, from the job's seed: the same seed, the same audio
    kept_previous: torch.Tensor | None = field(default=None)  # DPM-Solver++'s history before a repeated step

    @classmethod
    def of(
        cls,
        layout: Layout,
        clip_latents: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor,
        scheduler: SchedulerMixin,
        jumps: int,
        seed: int,
    ) -> Keep:
        """`scheduler` after `set_timesteps`; its `alphas_cumprod` give the noise level of each timestep."""
        plain = Schedule.of(scheduler)
        schedule, origin = resampled(plain, jumps)
        alphas = scheduler.alphas_cumprod.cpu().double()
        levels = tuple((float(alphas[t].sqrt()), float((1 - alphas[t]).sqrt())) for t in plain.timesteps)
        known = noise.new_zeros(1, *noise.shape[1:])
        at = layout.clip_frame
        known[:, :, at : at + clip_latents.shape[2]] = clip_latents
        on_device = mask.to(noise.device, noise.dtype)
        generator = torch.Generator("cpu").manual_seed(seed)
        return cls(layout, clip_latents, known, noise, mask, on_device, schedule, origin, levels, generator)

    def noised(self, level: int) -> torch.Tensor:
        """The kept latents at the start level of plain step `level`."""
        alpha, sigma = self.levels[level]
        return alpha * self.known + sigma * self.noise

    def blend(self, latents: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        return self.mask * latents + (1 - self.mask) * kept

    def start(self, latents: torch.Tensor) -> torch.Tensor:
        """The first step's input: noise where the model writes, the clip noised to that level elsewhere."""
        return self.blend(latents, self.noised(0))

    def after_step(
        self, entry: int, latents: torch.Tensor, previous: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Schedule entry `entry` has run: blend the kept frames in at the level it ended at, and when the next
        entry repeats the same step, noise back to its start level with the history it started from."""
        step = self.origin[entry]
        last = entry + 1 == len(self.origin)
        kept = self.known if last else self.noised(step + 1)
        latents = self.blend(latents, kept)
        if last or self.origin[entry + 1] != step:
            self.kept_previous = previous
            return latents, previous
        (alpha_from, _), (alpha_to, _) = self.levels[step + 1], self.levels[step]
        ratio = (alpha_to / alpha_from) ** 2  # alpha_bar at the start over alpha_bar at the end: below 1
        fresh = torch.randn(latents.shape, generator=self.generator, dtype=torch.float32)
        back = ratio**0.5 * latents + (1 - ratio) ** 0.5 * fresh.to(latents.device, latents.dtype)
        return back, self.kept_previous
