"""AudioLDM2 inference, split into encode / denoise / decode like diffusers' pipeline.

The split exists for two reasons the stock `AudioLDM2Pipeline.__call__` cannot
serve:

* batch invariance: each prompt is encoded alone and its T5 embeddings are
  zero-padded (attention mask 0) to one fixed length, so a job's conditioning
  (and audio) does not depend on the other prompts of its batch; noise comes
  from one generator per waveform; see also CPU_UNET_ROW_MULTIPLE and `decode`;
* per-job handling: each job keeps its own guidance, seed, length, CLAP
  ranking and failure (NaN) status inside a shared forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import soxr
import torch
from diffusers import AudioLDM2Pipeline, DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import GPT2LMHeadModel
from transformers.audio_utils import mel_filter_bank

from models.phases import phase
from schemas import DiffusionParams, GenerationJob, Scheduler, TransformJob

# AudioLDM2's mel features (its training STFT): 1024-point FFT and window, hop 160 at
# 16 kHz, Slaney mel filters over 0-8 kHz, natural log of magnitudes clamped at 1e-5.
MEL_FFT = 1024
MEL_HOP = 160
MEL_MAX_HZ = 8000.0
LOG_FLOOR = 1e-5

SCHEDULERS: dict[Scheduler, type[SchedulerMixin]] = {
    Scheduler.DPMPP: DPMSolverMultistepScheduler,
    Scheduler.DDIM: DDIMScheduler,
}


def load_pipeline(path: str, device: torch.device, dtype: torch.dtype) -> AudioLDM2Pipeline:
    """Load a diffusers AudioLDM2 folder.

    The published checkpoints list their language model as `GPT2Model`, which
    lacks the generation helpers the pipeline calls (diffusers issue 12630).
    Loading the same weights as `GPT2LMHeadModel` fixes it; for a checkpoint
    already saved as `GPT2LMHeadModel` this is the same load.
    """
    language_model = GPT2LMHeadModel.from_pretrained(path, subfolder="language_model", dtype=dtype)
    pipe = AudioLDM2Pipeline.from_pretrained(path, language_model=language_model, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass(frozen=True)
class Conditioning:
    """One prompt's text conditioning; rows are [negative, positive] when guidance is on."""

    prompt_embeds: torch.Tensor  # (rows, T5 tokens, T5 dim)
    attention_mask: torch.Tensor  # (rows, T5 tokens)
    generated_embeds: torch.Tensor  # (rows, language-model tokens, dim)


@dataclass(frozen=True)
class JobAudio:
    """One job's decoded waveforms and latents, rows in seed order (see `waveform_seeds`)."""

    waveforms: torch.Tensor  # (num_waveforms, samples), float32 on the CPU
    latents: torch.Tensor  # (num_waveforms, channels, frames, bins)
    clap_scores: list[float] | None = None  # with several waveforms: each one's similarity to the prompt

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.waveforms).all() and torch.isfinite(self.latents).all())


def uses_guidance(guidance_scale: float) -> bool:
    """Classifier-free guidance runs only above 1, as in diffusers."""
    return guidance_scale > 1.0


def first_step(steps: int, strength: float) -> int:
    """Index of the first denoising step a transform runs (diffusers' img2img convention)."""
    return steps - min(int(steps * strength), steps)


def waveform_seeds(job: GenerationJob) -> list[int]:
    return [job.seed + k for k in range(job.num_waveforms)]


def pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Append copies of the first row until `tensor` has `rows` rows."""
    missing = rows - tensor.shape[0]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, tensor[:1].expand(missing, *tensor.shape[1:])])


# MKL's fp32 GEMM computes rows in blocks of 4 and the leftover 1-3 rows with
# other kernels (other summation orders). The UNet's timestep projections are
# GEMMs with one row per sample, so on the CPU the UNet always runs on a
# multiple of this many rows (measured: every row then equals its value in a
# 4-row batch, for batches of 4 to 64), and a job's audio is bit-identical
# alone or batched.
CPU_UNET_ROW_MULTIPLE = 4


class AudioLDM2Engine:
    def __init__(self, pipe: AudioLDM2Pipeline) -> None:
        self.pipe = pipe
        self.device = pipe._execution_device
        self.unet_row_multiple = CPU_UNET_ROW_MULTIPLE if self.device.type == "cpu" else 1
        self.dtype = pipe.unet.dtype
        vocoder = pipe.vocoder.config
        self.sample_rate: int = vocoder.sampling_rate
        self.mel_frames_per_second = vocoder.sampling_rate / math.prod(vocoder.upsample_rates)
        self.mel_bins: int = vocoder.model_in_dim
        self.mel_filters = torch.from_numpy(
            mel_filter_bank(
                num_frequency_bins=MEL_FFT // 2 + 1,
                num_mel_filters=self.mel_bins,
                min_frequency=0.0,
                max_frequency=MEL_MAX_HZ,
                sampling_rate=self.sample_rate,
                norm="slaney",
                mel_scale="slaney",
            ).T
        ).float()

    # ---- shapes -----------------------------------------------------------------

    def mel_frames(self, duration: float) -> int:
        """Mel frames for `duration` seconds, rounded up to what the VAE can encode (as the pipeline does)."""
        factor = self.pipe.vae_scale_factor
        return math.ceil(int(duration * self.mel_frames_per_second) / factor) * factor

    def num_samples(self, duration: float) -> int:
        return int(duration * self.sample_rate)

    def group_key(self, job: GenerationJob) -> tuple[int, int, Scheduler, bool]:
        """Jobs with equal keys share one forward pass: same latent shape and the same schedule."""
        return self._shape_and_schedule(job.duration, job)

    def transform_key(self, job: TransformJob) -> tuple[int, int, Scheduler, bool, int]:
        """As `group_key`, plus the step the denoising starts at (which `strength` sets)."""
        duration = len(job.samples) / self.sample_rate
        return (*self._shape_and_schedule(duration, job), first_step(job.steps, job.strength))

    def _shape_and_schedule(
        self, duration: float, job: GenerationJob | TransformJob
    ) -> tuple[int, int, Scheduler, bool]:
        return (self.mel_frames(duration), job.steps, job.scheduler, uses_guidance(job.guidance_scale))

    # ---- encode -----------------------------------------------------------------

    @torch.no_grad()
    def encode(self, prompt: str, negative_prompt: str, guidance: bool) -> Conditioning:
        """Encode one prompt on its own, so its padding never depends on other prompts."""
        embeds, mask, generated = self.pipe.encode_prompt(
            [prompt],
            self.device,
            num_waveforms_per_prompt=1,
            do_classifier_free_guidance=guidance,
            negative_prompt=[negative_prompt] if guidance else None,
        )
        return Conditioning(embeds, mask, generated)

    def stack(self, conditionings: list[Conditioning], repeats: list[int]) -> Conditioning:
        """Batch conditionings: pad T5 tokens with zeros (masked out), repeat per waveform.

        Every job is padded to the same fixed length (the T5 tokenizer's
        truncation limit), alone or batched: masked keys still change the
        summation order of attention, so a length that depended on the other
        prompts of the batch would change this job's audio in the last bits.
        Output rows are all negatives first, then all positives, matching the
        `chunk(2)` of classifier-free guidance.
        """
        tokens = self.pipe.tokenizer_2.model_max_length
        halves = conditionings[0].prompt_embeds.shape[0]  # 2 with guidance, else 1
        embeds, masks, generated = [], [], []
        for half in range(halves):
            for cond, n in zip(conditionings, repeats, strict=True):
                pad = tokens - cond.prompt_embeds.shape[1]
                embeds.append(
                    torch.nn.functional.pad(cond.prompt_embeds[half : half + 1], (0, 0, 0, pad)).repeat(n, 1, 1)
                )
                masks.append(torch.nn.functional.pad(cond.attention_mask[half : half + 1], (0, pad)).repeat(n, 1))
                generated.append(cond.generated_embeds[half : half + 1].repeat(n, 1, 1))
        return Conditioning(torch.cat(embeds), torch.cat(masks), torch.cat(generated))

    # ---- denoise ----------------------------------------------------------------

    def make_scheduler(self, name: Scheduler, steps: int) -> SchedulerMixin:
        """A fresh scheduler per call: schedulers keep state between steps."""
        scheduler = SCHEDULERS[name].from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(steps, device=self.device)
        return scheduler

    def initial_noise(self, seeds: list[int], frames: int) -> torch.Tensor:
        """One CPU generator per waveform: the same seed gives the same noise on any device and in any batch."""
        shape = (
            1,
            self.pipe.unet.config.in_channels,
            frames // self.pipe.vae_scale_factor,
            self.mel_bins // self.pipe.vae_scale_factor,
        )
        return torch.cat(
            [
                randn_tensor(
                    shape, generator=torch.Generator("cpu").manual_seed(s), device=self.device, dtype=self.dtype
                )
                for s in seeds
            ]
        )

    @torch.no_grad()
    def denoise(
        self,
        latents: torch.Tensor,
        cond: Conditioning,
        scheduler: SchedulerMixin,
        timesteps: torch.Tensor,
        guidance_scales: torch.Tensor | None,
        before_step: Callable[[], None] = lambda: None,
    ) -> torch.Tensor:
        """Run the UNet over `timesteps`; `guidance_scales` holds one scale per row, or None without guidance.

        `before_step` runs before every step: the runner's hook to stop work nobody waits for any more.
        """
        rows = cond.prompt_embeds.shape[0]
        padded = math.ceil(rows / self.unet_row_multiple) * self.unet_row_multiple
        generated, embeds, mask = (
            pad_rows(t, padded) for t in (cond.generated_embeds, cond.prompt_embeds, cond.attention_mask)
        )
        for t in timesteps:
            before_step()
            model_input = torch.cat([latents] * 2) if guidance_scales is not None else latents
            model_input = pad_rows(scheduler.scale_model_input(model_input, t), padded)
            noise = self.pipe.unet(
                model_input,
                t,
                encoder_hidden_states=generated,
                encoder_hidden_states_1=embeds,
                encoder_attention_mask_1=mask,
                return_dict=False,
            )[0][:rows]
            if guidance_scales is not None:
                uncond, text = noise.chunk(2)
                noise = uncond + guidance_scales * (text - uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        return latents

    # ---- decode -----------------------------------------------------------------

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, num_samples: int) -> torch.Tensor:
        """VAE + vocoder, one row at a time.

        Their convolutions pick batch-size-dependent kernels on the CPU, and
        decoding runs once per waveform (not once per step), so batching it
        buys little and would cost batch invariance.
        """
        waveforms = []
        for row in latents.split(1):
            mel = self.pipe.vae.decode(row / self.pipe.vae.config.scaling_factor).sample
            waveforms.append(self.pipe.mel_spectrogram_to_waveform(mel)[:, :num_samples])
        return torch.cat(waveforms)

    @torch.no_grad()
    def clap_scores(self, prompt: str, waveforms: torch.Tensor) -> list[float]:
        """CLAP similarity of each waveform to its own prompt (never to other prompts of the batch).

        Scored on consecutive windows of the feature extractor's length and
        averaged: longer inputs would make CLAP pick random crops.
        """
        extractor = self.pipe.feature_extractor
        audio = soxr.resample(waveforms.numpy().T, self.sample_rate, extractor.sampling_rate).T
        window = int(extractor.max_length_s * extractor.sampling_rate)
        text = self.pipe.tokenizer([prompt], return_tensors="pt", padding=True).to(self.device)
        scores = []
        for start in range(0, audio.shape[1], window):
            features = extractor(
                list(np.ascontiguousarray(audio[:, start : start + window])),
                return_tensors="pt",
                sampling_rate=extractor.sampling_rate,
            ).input_features.to(self.device, self.dtype)
            scores.append(self.pipe.text_encoder(**text, input_features=features).logits_per_text[0].float())
        return torch.stack(scores).mean(0).tolist()

    # ---- audio in (transform) ---------------------------------------------------

    def log_mel(self, samples: np.ndarray, frames: int) -> torch.Tensor:
        """AudioLDM2's input features for one clip: (1, 1, frames, mel bins), silence-padded to `frames`."""
        wave = torch.tensor(samples, dtype=torch.float32)
        wave = wave - wave.mean()
        peak = wave.abs().max()
        if peak > 0:
            wave = 0.5 * wave / peak
        edge = (MEL_FFT - MEL_HOP) // 2
        wave = torch.nn.functional.pad(wave[None, None], (edge, edge), mode="reflect")[0, 0]
        spectrum = torch.stft(
            wave, MEL_FFT, MEL_HOP, MEL_FFT, window=torch.hann_window(MEL_FFT), center=False, return_complex=True
        ).abs()
        mel = torch.log(torch.clamp(self.mel_filters @ spectrum, min=LOG_FLOOR)).T[:frames]
        mel = torch.nn.functional.pad(mel, (0, 0, 0, frames - mel.shape[0]), value=math.log(LOG_FLOOR))
        return mel[None, None].to(self.device, self.dtype)

    @torch.no_grad()
    def encode_audio(self, samples: np.ndarray, frames: int) -> torch.Tensor:
        """Clip -> VAE latent (the distribution's mean: deterministic), scaled for the UNet."""
        vae = self.pipe.vae
        return vae.encode(self.log_mel(samples, frames)).latent_dist.mean * vae.config.scaling_factor

    # ---- one group of jobs ------------------------------------------------------

    def generate(self, jobs: list[GenerationJob], before_step: Callable[[], None] = lambda: None) -> list[JobAudio]:
        """Generate a group of jobs that share `group_key`, in one forward pass per step."""
        frames, steps, scheduler_name, guidance = self.group_key(jobs[0])
        scheduler = self.make_scheduler(scheduler_name, steps)
        repeats = [job.num_waveforms for job in jobs]
        noise = self.initial_noise([s for job in jobs for s in waveform_seeds(job)], frames)
        with phase("encode", prompts=len(jobs)):
            cond = self.stack([self.encode(j.prompt, j.negative_prompt, guidance) for j in jobs], repeats)
        scales = self.guidance_scales(jobs, repeats, guidance)
        with phase("denoise", steps=len(scheduler.timesteps), rows=sum(repeats), latent_frames=frames):
            latents = self.denoise(
                noise * scheduler.init_noise_sigma, cond, scheduler, scheduler.timesteps, scales, before_step
            )
        return self.finish(jobs, repeats, latents, [self.num_samples(job.duration) for job in jobs])

    def transform(self, jobs: list[TransformJob], before_step: Callable[[], None] = lambda: None) -> list[JobAudio]:
        """Re-synthesise a group of clips that share `transform_key`: noise each clip's latent to the
        step `strength` gives, then denoise the remaining steps under its prompt.

        strength 0 runs no step (the autoencoder + vocoder round trip); strength 1
        starts from pure noise, exactly as text-to-audio does.
        """
        frames, steps, scheduler_name, guidance, start = self.transform_key(jobs[0])
        scheduler = self.make_scheduler(scheduler_name, steps)
        timesteps = scheduler.timesteps[start * scheduler.order :]
        noise = self.initial_noise([job.seed for job in jobs], frames)
        if start == 0:
            latents = noise * scheduler.init_noise_sigma
        else:
            with phase("encode_audio", clips=len(jobs), latent_frames=frames):
                latents = torch.cat([self.encode_audio(job.samples, frames) for job in jobs])
            if len(timesteps):
                if hasattr(scheduler, "set_begin_index"):
                    scheduler.set_begin_index(start * scheduler.order)
                latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(jobs)))
        if len(timesteps):
            with phase("encode", prompts=len(jobs)):
                cond = self.stack([self.encode(j.prompt, j.negative_prompt, guidance) for j in jobs], [1] * len(jobs))
            scales = self.guidance_scales(jobs, [1] * len(jobs), guidance)
            with phase("denoise", steps=len(timesteps), rows=len(jobs), latent_frames=frames):
                latents = self.denoise(latents, cond, scheduler, timesteps, scales, before_step)
        return self.finish(jobs, [1] * len(jobs), latents, [len(job.samples) for job in jobs])

    def guidance_scales(
        self, jobs: Sequence[DiffusionParams], repeats: list[int], guidance: bool
    ) -> torch.Tensor | None:
        """One guidance scale per latent row (a job's waveforms share its scale); None without guidance."""
        if not guidance:
            return None
        per_row = [job.guidance_scale for job, n in zip(jobs, repeats, strict=True) for _ in range(n)]
        return torch.tensor(per_row, device=self.device, dtype=self.dtype).view(-1, 1, 1, 1)

    def finish(
        self, jobs: Sequence[DiffusionParams], repeats: list[int], latents: torch.Tensor, lengths: list[int]
    ) -> list[JobAudio]:
        """Decode, cut each job's rows to its own length, and rank jobs with several waveforms by CLAP."""
        with phase("decode", rows=latents.shape[0], samples=max(lengths)):
            waveforms = self.decode(latents, max(lengths))
        audio, row = [], 0
        with phase("rank") as ranked:
            for job, count, length in zip(jobs, repeats, lengths, strict=True):
                rows = slice(row, row + count)
                result = JobAudio(waveforms[rows, :length], latents[rows].float().cpu())
                if count > 1 and result.finite:
                    result = replace(result, clap_scores=self.clap_scores(job.prompt, result.waveforms))
                audio.append(result)
                row += count
            ranked["waveforms"] = sum(len(a.clap_scores or ()) for a in audio)
        return audio
