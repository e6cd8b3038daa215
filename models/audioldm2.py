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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import soxr
import torch
from diffusers import AudioLDM2Pipeline, AudioLDM2UNet2DConditionModel, DDIMScheduler, DPMSolverMultistepScheduler
from diffusers import BitsAndBytesConfig as DiffusersBitsAndBytesConfig
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import BitsAndBytesConfig as TransformersBitsAndBytesConfig
from transformers import ClapModel, T5EncoderModel
from transformers.audio_utils import mel_filter_bank

from compat.diffusers_language_model import load_language_model
from models.allocator import returning_freed_memory
from models.memory import Placement, bitsandbytes_options, quantize_linear_weights
from models.multidiffusion import Fusion, Windows, split
from models.phases import phase
from models.pieces import Pieces, Work, within
from models.tiled_vae import decode_tiled, encode_tiled, vocode_chunked, vocoder_pieces
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


def load_pipeline(path: str, device: torch.device, dtype: torch.dtype, quantization: str = "none") -> AudioLDM2Pipeline:
    """Load a diffusers AudioLDM2 folder, its language model as GPT2LMHeadModel (compat/diffusers_language_model.py).

    With a bitsandbytes `quantization` the UNet and text encoders are quantized
    while loading, straight onto `device` (models/memory.py).
    """
    bitsandbytes = bitsandbytes_options(quantization, dtype)
    quantized = bitsandbytes_components(path, device, dtype, bitsandbytes) if bitsandbytes else {}
    language_model = quantized.pop("language_model", None) or load_language_model(path, dtype=dtype)
    pipe = AudioLDM2Pipeline.from_pretrained(path, language_model=language_model, dtype=dtype, **quantized)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)  # diffusers leaves bitsandbytes modules where they were loaded


def bitsandbytes_components(
    path: str, device: torch.device, dtype: torch.dtype, options: dict[str, Any]
) -> dict[str, torch.nn.Module]:
    """The UNet and text encoders (CLAP's text side, T5, GPT-2) with bitsandbytes weights, on `device`."""
    on_device = {"device_map": {"": str(device)}}

    def transformers_config(*unquantized: str) -> TransformersBitsAndBytesConfig:
        return TransformersBitsAndBytesConfig(**options, llm_int8_skip_modules=list(unquantized) or None)

    return {
        "unet": AudioLDM2UNet2DConditionModel.from_pretrained(
            path, subfolder="unet", torch_dtype=dtype, quantization_config=DiffusersBitsAndBytesConfig(**options)
        ),
        "text_encoder": ClapModel.from_pretrained(
            path,
            subfolder="text_encoder",
            dtype=dtype,
            quantization_config=transformers_config("audio_model", "audio_projection", "text_projection"),
            **on_device,
        ),
        "text_encoder_2": T5EncoderModel.from_pretrained(
            path, subfolder="text_encoder_2", dtype=dtype, quantization_config=transformers_config(), **on_device
        ),
        "language_model": load_language_model(
            path, dtype=dtype, quantization_config=transformers_config(), **on_device
        ),
    }


def load_placed_pipeline(path: str, placement: Placement) -> AudioLDM2Pipeline:
    """The pipeline on its device and dtype, offloaded and with sliced attention as `placement` asks."""
    options = placement.options
    on_gpu_later = options.offload != "none"  # offloading hooks move each model to the GPU when it runs
    pipe = load_pipeline(
        path, torch.device("cpu") if on_gpu_later else placement.device, placement.dtype, options.quantization
    )
    if options.offload == "model":
        pipe.enable_model_cpu_offload()
    elif options.offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    if options.quantization == "int8":
        quantize_linear_weights(pipe.unet, pipe.text_encoder.text_model, pipe.text_encoder_2, pipe.language_model)
    return pipe


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
    # Checked where the audio is made (the model thread): a torch op on the runner's event loop would start an
    # OpenMP team there, and two teams on two cores halve the model thread's speed (runners/model_thread.py).
    finite: bool = field(init=False)

    def __post_init__(self) -> None:
        finite = bool(torch.isfinite(self.waveforms).all() and torch.isfinite(self.latents).all())
        object.__setattr__(self, "finite", finite)


@dataclass(eq=False)
class Denoising:
    """One job's denoising in progress: its latents (one row per waveform), conditioning and scheduler.

    A long latent is denoised as windows (models/multidiffusion.py); a short one is its own single window. A
    step may be spread over several UNet passes (`pending` windows at a time); the scheduler steps once every
    window of the step has its prediction.
    """

    latents: torch.Tensor  # (waveforms, channels, latent frames, bins)
    cond: Conditioning  # rows: negatives then positives (guidance on), one per waveform
    scales: torch.Tensor | None  # (waveforms, 1, 1, 1) guidance scale per row, None without guidance
    scheduler: SchedulerMixin
    timesteps: torch.Tensor
    windows: Windows
    lengths: list[int]  # output samples per waveform
    prompt: str  # for CLAP ranking
    step: int = 0
    fusion: Fusion | None = None
    model_input: torch.Tensor | None = None  # this step's scaled latents, computed once per step

    @property
    def done(self) -> bool:
        return self.step >= len(self.timesteps)

    @property
    def rows_per_window(self) -> int:
        return self.latents.shape[0] * (2 if self.scales is not None else 1)

    @property
    def pending(self) -> int:
        """Windows of the current step still to be predicted."""
        return len(self.windows) - (self.fusion.received if self.fusion is not None else 0)


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


# Up to this length a clip is one latent, exactly as before long-form generation existed (the same seed gives
# the same audio); longer clips are denoised as windows of the model's native length (docs/long-form.md).
SINGLE_LATENT_MAX_S = 30.0
# Neighbouring windows share half their frames: measured in bench/long_form.py (`--overlaps`).
WINDOW_OVERLAP = 0.5
# Most rows one UNet pass may take (a long job's step is split into several passes beyond it).
MAX_UNET_ROWS = 32


class AudioLDM2Engine:
    def __init__(
        self,
        pipe: AudioLDM2Pipeline,
        single_latent_max_s: float = SINGLE_LATENT_MAX_S,
        window_overlap: float = WINDOW_OVERLAP,
        max_rows: int = MAX_UNET_ROWS,
    ) -> None:
        self.pipe = pipe
        self.device = pipe._execution_device
        self.unet_row_multiple = CPU_UNET_ROW_MULTIPLE if self.device.type == "cpu" else 1
        self.window_frames: int = pipe.unet.config.sample_size  # the native length, in latent frames
        self.window_overlap = int(self.window_frames * window_overlap)
        self.max_rows = max_rows
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
        self.single_latent_mel_frames = self.mel_frames(single_latent_max_s)

    # ---- shapes -----------------------------------------------------------------

    def mel_frames(self, duration: float) -> int:
        """Mel frames for `duration` seconds, rounded up to what the VAE can encode (as the pipeline does)."""
        factor = self.pipe.vae_scale_factor
        return math.ceil(int(duration * self.mel_frames_per_second) / factor) * factor

    def num_samples(self, duration: float) -> int:
        return int(duration * self.sample_rate)

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
    def denoise_pass(self, parts: Sequence[tuple[Denoising, int]]) -> None:
        """One UNet pass: for each (job, n), the job's next n windows of its current step, as rows of one batch.

        Jobs may be at different steps (each row gets its own timestep) and differ in every knob; their windows
        must have one size. A job whose step has all its windows then takes its scheduler step.
        """
        inputs, embeds, masks, generated, timesteps = [], [], [], [], []
        for job, count in parts:
            t = job.timesteps[job.step]
            if job.fusion is None:
                job.fusion = Fusion(job.latents, job.windows)
                job.model_input = job.scheduler.scale_model_input(job.latents, t)
            assert job.model_input is not None
            first = job.fusion.received
            rows = split(job.model_input, job.windows, first, first + count)
            halves = 2 if job.scales is not None else 1
            inputs.append(torch.cat([rows] * halves))
            for half in range(halves):
                own = slice(half * job.latents.shape[0], (half + 1) * job.latents.shape[0])
                embeds.append(job.cond.prompt_embeds[own].repeat(count, 1, 1))
                masks.append(job.cond.attention_mask[own].repeat(count, 1))
                generated.append(job.cond.generated_embeds[own].repeat(count, 1, 1))
            timesteps.append(t.expand(rows.shape[0] * halves))
        noise = self.unet(
            torch.cat(inputs), torch.cat(timesteps), torch.cat(embeds), torch.cat(masks), torch.cat(generated)
        )
        for (job, count), predicted in zip(parts, noise.split([x.shape[0] for x in inputs]), strict=True):
            if job.scales is not None:
                uncond, text = predicted.chunk(2)
                predicted = uncond + job.scales.repeat(count, 1, 1, 1) * (text - uncond)
            assert job.fusion is not None
            job.fusion.add(predicted)
            if job.fusion.complete:
                fused = job.fusion.result() if len(job.windows) > 1 else predicted
                job.latents = job.scheduler.step(fused, job.timesteps[job.step], job.latents, return_dict=False)[0]
                job.step += 1
                job.fusion = job.model_input = None

    def unet(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        generated: torch.Tensor,
    ) -> torch.Tensor:
        """The UNet on any number of rows, padded to the row multiple that keeps each row's result fixed."""
        rows = sample.shape[0]
        padded = math.ceil(rows / self.unet_row_multiple) * self.unet_row_multiple
        return self.pipe.unet(
            pad_rows(sample, padded),
            pad_rows(timesteps, padded),
            encoder_hidden_states=pad_rows(generated, padded),
            encoder_hidden_states_1=pad_rows(embeds, padded),
            encoder_attention_mask_1=pad_rows(mask, padded),
            return_dict=False,
        )[0][:rows]

    # ---- decode -----------------------------------------------------------------

    def decode(self, latents: torch.Tensor, num_samples: int) -> Pieces[torch.Tensor]:
        """VAE + vocoder, one row at a time.

        Their convolutions pick batch-size-dependent kernels on the CPU, and
        decoding runs once per waveform (not once per step), so batching it
        buys little and would cost batch invariance. Up to the single-latent
        length in one piece; longer, in tiles and chunks (memory of one tile,
        whatever the length) and in pieces, as long clips are encoded.
        """
        rows = [row / self.pipe.vae.config.scaling_factor for row in latents.split(1)]
        mel_frames = latents.shape[2] * self.pipe.vae_scale_factor
        if mel_frames <= self.single_latent_mel_frames:

            @torch.no_grad()
            def whole() -> torch.Tensor:
                waveforms = torch.empty(len(rows), num_samples)
                for index, row in enumerate(rows):
                    mel = self.pipe.vae.decode(row).sample
                    waveforms[index] = self.pipe.mel_spectrogram_to_waveform(mel)[0, :num_samples]
                return waveforms

            return Pieces.one(whole)
        tiles = [decode_tiled(self.pipe.vae, row, self.window_frames) for row in rows]

        def work() -> Work[torch.Tensor]:
            waveforms = torch.empty(len(rows), num_samples)
            for index, row in enumerate(tiles):
                if index:
                    yield
                mel = yield from row.work
                yield
                waveforms[index] = (yield from vocode_chunked(self.pipe.vocoder, mel[:, 0]).work)[:num_samples]
            return waveforms

        total = sum(row.total for row in tiles) + len(rows) * vocoder_pieces(mel_frames)
        return Pieces(within(returning_freed_memory, work()), total)

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

    def encode_audio(self, samples: np.ndarray, frames: int) -> Pieces[torch.Tensor]:
        """Clip -> VAE latent (the distribution's mean: deterministic), scaled for the UNet.

        Up to the single-latent length in one piece, the whole clip at once, as it always was. A longer clip in
        tiles, as long latents are decoded, and in pieces (models/tiled_vae.py): a 10-minute clip is minutes of
        work on a CPU, which other jobs' steps and a cancellation must not wait for; freed memory is returned
        while each piece runs (models/allocator.py), not while other jobs' pieces run between them."""
        vae = self.pipe.vae

        def mel() -> torch.Tensor:
            return self.log_mel(samples, frames)

        if frames <= self.single_latent_mel_frames:
            return Pieces.one(torch.no_grad()(lambda: vae.encode(mel()).latent_dist.mean * vae.config.scaling_factor))
        tiles = encode_tiled(vae, mel, frames, self.window_frames)

        def scaled() -> Work[torch.Tensor]:
            return (yield from tiles.work) * vae.config.scaling_factor

        return Pieces(within(returning_freed_memory, scaled()), tiles.total)

    # ---- one job, start to finish ------------------------------------------------

    def windows(self, mel_frames: int) -> Windows:
        """A latent up to `single_latent_frames` is one window (as it always was); a longer one, native windows."""
        frames = mel_frames // self.pipe.vae_scale_factor
        if mel_frames <= self.single_latent_mel_frames:
            return Windows(frames, frames, 0)
        return Windows(frames, self.window_frames, self.window_overlap)

    def start_generation(self, job: GenerationJob) -> Pieces[Denoising]:
        """The job's noise and prompt, in one piece."""

        def start() -> Denoising:
            frames = self.mel_frames(job.duration)
            scheduler = self.make_scheduler(job.scheduler, job.steps)
            noise = self.initial_noise(waveform_seeds(job), frames)
            latents = noise * scheduler.init_noise_sigma
            samples = self.num_samples(job.duration)
            return self._start(job, latents, scheduler, scheduler.timesteps, frames, job.num_waveforms, samples)

        return Pieces.one(start)

    def start_transform(self, job: TransformJob) -> Pieces[Denoising]:
        """Noise the clip's latent to the step `strength` gives; the remaining steps are left to denoise.

        strength 0 runs no step (the autoencoder + vocoder round trip); strength 1
        starts from pure noise, exactly as text-to-audio does. In the pieces of the clip's encoding
        (`encode_audio`), the first also making the noise, the last also encoding the prompt.
        """
        frames = self.mel_frames(len(job.samples) / self.sample_rate)
        start = first_step(job.steps, job.strength)
        encoding = self.encode_audio(job.samples, frames) if start else None

        def work() -> Work[Denoising]:
            scheduler = self.make_scheduler(job.scheduler, job.steps)
            timesteps = scheduler.timesteps[start * scheduler.order :]
            noise = self.initial_noise([job.seed], frames)
            if encoding is None:
                latents = noise * scheduler.init_noise_sigma
            else:
                with phase("encode_audio", latent_frames=frames // self.pipe.vae_scale_factor, pieces=encoding.total):
                    latents = yield from encoding.work
                if len(timesteps):
                    if hasattr(scheduler, "set_begin_index"):
                        scheduler.set_begin_index(start * scheduler.order)
                    latents = scheduler.add_noise(latents, noise, timesteps[:1])
            return self._start(job, latents, scheduler, timesteps, frames, 1, len(job.samples))

        return Pieces(work(), encoding.total if encoding else 1)

    def _start(
        self,
        job: DiffusionParams,
        latents: torch.Tensor,
        scheduler: SchedulerMixin,
        timesteps: torch.Tensor,
        mel_frames: int,
        waveforms: int,
        samples: int,
    ) -> Denoising:
        guidance = uses_guidance(job.guidance_scale)
        cond = Conditioning(latents.new_empty(0), latents.new_empty(0), latents.new_empty(0))
        if len(timesteps):
            with phase("encode", prompts=1):
                cond = self.stack([self.encode(job.prompt, job.negative_prompt, guidance)], [waveforms])
        scales = None
        if guidance:
            scales = torch.full((waveforms, 1, 1, 1), job.guidance_scale, device=self.device, dtype=self.dtype)
        return Denoising(
            latents, cond, scales, scheduler, timesteps, self.windows(mel_frames), [samples] * waveforms, job.prompt
        )

    def finish(self, job: Denoising) -> Pieces[JobAudio]:
        """Decode a denoised job's waveforms, cut to length, and rank them by CLAP when there are several: in the
        pieces of `decode`, the last also ranking."""
        length = max(job.lengths)
        decoding = self.decode(job.latents, length)

        def work() -> Work[JobAudio]:
            with phase("decode", rows=job.latents.shape[0], samples=length, pieces=decoding.total):
                waveforms = yield from decoding.work
            result = JobAudio(waveforms, job.latents.float().cpu())
            with phase("rank") as ranked:
                if len(job.lengths) > 1 and result.finite:
                    result = replace(result, clap_scores=self.clap_scores(job.prompt, result.waveforms))
                ranked["waveforms"] = len(result.clap_scores or ())
            return result

        return Pieces(work(), decoding.total)
