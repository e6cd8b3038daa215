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
from models.batched_steps import Schedule, Update, coefficient_rows, step
from models.compiled_unet import CompiledUNet, row_buckets
from models.editing import Keep, Layout, written_frames
from models.memory import Placement, bitsandbytes_options, quantize_linear_weights
from models.multidiffusion import Fusion, Windows, split
from models.phases import phase
from models.pieces import Pieces, Work, within
from models.tiled_vae import decode_tiled, encode_tiled, vocode_chunked, vocoder_pieces
from schemas import DiffusionParams, EditJob, GenerationJob, Scheduler, TransformJob
from settings import UNetCompile

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
    """One job's denoising in progress: its latents (one row per waveform), conditioning and schedule.

    A long latent is denoised as windows (models/multidiffusion.py); a short one is its own single window. A
    step may be spread over several UNet passes (`pending` windows at a time); the job steps once every window
    of the step has its prediction. Everything the scheduler decides on (`step`, `done`, `pending`) is a host
    number: no pass waits for the device to tell it where a job stands.
    """

    latents: torch.Tensor  # (waveforms, channels, latent frames, bins)
    cond: Conditioning  # rows: negatives then positives (guidance on), one per waveform
    scales: torch.Tensor | None  # (waveforms, 1, 1, 1) guidance scale per row, None without guidance
    schedule: Schedule
    windows: Windows
    lengths: list[int]  # output samples per waveform
    prompt: str  # for CLAP ranking
    step: int = 0
    fusion: Fusion | None = None  # with several windows
    previous: torch.Tensor | None = None  # DPM-Solver++: the last step's data prediction
    keep: Keep | None = None  # an edit: the clip's frames it keeps (models/editing.py)

    @property
    def timesteps(self) -> tuple[int, ...]:
        return self.schedule.timesteps

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


@dataclass(eq=False)
class PassPlan:
    """What every pass of the same jobs (with the same windows per pass) reuses: their order, guided jobs
    first, so that the UNet's rows are all unconditional halves, then every job's own rows (the conditional
    halves, then the unguided jobs'); those rows' conditioning, padded as the UNet pads its rows; the guided
    rows' scales. Jobs in step together run pass after pass with the same plan: built once, not per pass."""

    parts: tuple[tuple[Denoising, int], ...]  # the jobs (held, so that their ids stay theirs) and windows per pass
    guided_rows: int
    own_rows: tuple[int, ...]  # per part, its rows after the unconditional halves
    cond: Conditioning
    scales: torch.Tensor | None  # (guided_rows, 1, 1, 1)

    def serves(self, parts: Sequence[tuple[Denoising, int]]) -> bool:
        mine = {id(job): count for job, count in self.parts}
        return len(parts) == len(mine) and all(mine.get(id(job)) == count for job, count in parts)


def uses_guidance(guidance_scale: float) -> bool:
    """Classifier-free guidance runs only above 1, as in diffusers."""
    return guidance_scale > 1.0


def first_step(steps: int, strength: float) -> int:
    """Index of the first denoising step a transform runs (diffusers' img2img convention)."""
    return steps - min(int(steps * strength), steps)


def waveform_seeds(job: GenerationJob | EditJob) -> list[int]:
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
        compile: UNetCompile = "none",
        compile_backend: str = "inductor",
    ) -> None:
        """`compile`: run the UNet under torch.compile, on row buckets (models/compiled_unet.py); `warm_up` then
        compiles every shape before the first job."""
        self.pipe = pipe
        self.device = pipe._execution_device
        self.unet_row_multiple = CPU_UNET_ROW_MULTIPLE if self.device.type == "cpu" else 1
        self.window_frames: int = pipe.unet.config.sample_size  # the native length, in latent frames
        self.window_overlap = int(self.window_frames * window_overlap)
        self.max_rows = max_rows
        self.compiled = None if compile == "none" else CompiledUNet(pipe.unet, compile, compile_backend)
        self.row_buckets = row_buckets(self.unet_row_multiple, max_rows) if self.compiled else ()
        self._last_plan: PassPlan | None = None
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
        self.latent_frame_samples = round(self.sample_rate / self.mel_frames_per_second) * pipe.vae_scale_factor
        for name in SCHEDULERS:  # a scheduler config the batched steps do not compute fails here, not per job
            Schedule.of(self.make_scheduler(name, 2))

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
        must have one size. Guidance is mixed for every guided row at once, and the jobs whose step has all its
        windows take it together, one update per kind (models/batched_steps.py). No op reads a device value.
        """
        plan = self._plan(parts)
        inputs = [self._window_rows(job, count) for job, count in plan.parts]
        batch = [x for (job, _), x in zip(plan.parts, inputs, strict=True) if job.scales is not None] + inputs
        own = [job.timesteps[job.step] for (job, _), x in zip(plan.parts, inputs, strict=True) for _ in range(len(x))]
        timesteps = own[: plan.guided_rows] + own  # host numbers, one small copy to the device
        timesteps += timesteps[:1] * (self.unet_rows(len(timesteps)) - len(timesteps))  # as `unet` pads
        sample = torch.cat(batch) if len(batch) > 1 else batch[0]
        noise = self.unet(
            sample,
            torch.tensor(timesteps).to(self.device, non_blocking=True),
            plan.cond.prompt_embeds,
            plan.cond.attention_mask,
            plan.cond.generated_embeds,
        )
        g = plan.guided_rows
        if g:
            uncond, text = noise[:g], noise[g : 2 * g]
            mixed = uncond + plan.scales * (text - uncond)
            noise = torch.cat([mixed, noise[2 * g :]]) if noise.shape[0] > 2 * g else mixed
        predictions = noise.split(plan.own_rows) if len(plan.parts) > 1 else (noise,)
        updates: dict[Update, list[tuple[Denoising, torch.Tensor]]] = {}
        for (job, _), predicted in zip(plan.parts, predictions, strict=True):
            if job.fusion is not None:
                job.fusion.add(predicted)
                if not job.fusion.complete:
                    continue
                predicted = job.fusion.result()
                job.fusion.reset()
            updates.setdefault(job.schedule.updates[job.step], []).append((job, predicted))
        if len(updates) == 1 and all(job.fusion is None for job, _ in plan.parts):
            # Every job of the pass takes the same update: its rows are the pass's own rows, in order, as they are.
            [(update, group)] = updates.items()
            self._step(update, group, noise, sample[g:] if g else sample)
        else:
            for update, group in updates.items():
                self._step(update, group)

    def _plan(self, parts: Sequence[tuple[Denoising, int]]) -> PassPlan:
        """The plan of the last pass when these are its jobs (and windows per pass), else a new one."""
        if self._last_plan is not None and self._last_plan.serves(parts):
            return self._last_plan
        ordered = tuple(sorted(parts, key=lambda part: part[0].scales is None))  # stable: guided jobs first
        guided = [(job, count) for job, count in ordered if job.scales is not None]
        # The rows' conditioning: the guided jobs' negative halves, then each job's own rows (its last
        # `waveforms` rows: the positive half with guidance, all of them without).
        halves = [(job.cond, slice(0, job.latents.shape[0]), count) for job, count in guided]
        halves += [
            (job.cond, slice(len(job.cond.prompt_embeds) - job.latents.shape[0], None), count) for job, count in ordered
        ]

        def rows_of(field: str) -> torch.Tensor:
            tensors = [(getattr(cond, field)[half], count) for cond, half, count in halves]
            rows = torch.cat([t.repeat(count, *[1] * (t.dim() - 1)) for t, count in tensors])
            return pad_rows(rows, self.unet_rows(rows.shape[0]))

        scales = [job.scales.repeat(count, 1, 1, 1) for job, count in guided]  # type: ignore[union-attr]
        self._last_plan = PassPlan(
            ordered,
            sum(count * job.latents.shape[0] for job, count in guided),
            tuple(count * job.latents.shape[0] for job, count in ordered),
            Conditioning(rows_of("prompt_embeds"), rows_of("attention_mask"), rows_of("generated_embeds")),
            torch.cat(scales) if scales else None,
        )
        return self._last_plan

    @staticmethod
    def _window_rows(job: Denoising, count: int) -> torch.Tensor:
        """The job's next `count` windows of its current step, as rows (a single window: its latents)."""
        if job.fusion is None:
            return job.latents
        first = job.fusion.received
        return split(job.latents, job.windows, first, first + count)

    def _step(
        self,
        update: Update,
        group: list[tuple[Denoising, torch.Tensor]],
        predicted: torch.Tensor | None = None,
        sample: torch.Tensor | None = None,
    ) -> None:
        """The jobs of `group` (each with its fused prediction) take their step, as one update of all their rows.

        `predicted` and `sample`: every row of the group already in one tensor each, in the group's order."""
        jobs = [job for job, _ in group]
        if predicted is None or sample is None:
            predicted = torch.cat([p for _, p in group]) if len(group) > 1 else group[0][1]
            sample = torch.cat([job.latents for job in jobs]) if len(jobs) > 1 else jobs[0].latents
        previous = None
        if update is Update.DPM_SECOND:
            histories = [job.previous for job in jobs]
            previous = torch.cat(histories) if len(histories) > 1 else histories[0]  # type: ignore[arg-type]
        coefficients = coefficient_rows(
            [(job.schedule.coefficients[job.step], job.latents.shape[0]) for job in jobs], self.device
        )
        latents, data = step(update, jobs[0].schedule.prediction, coefficients, predicted, sample, previous)
        rows = [job.latents.shape[0] for job in jobs]
        news = latents.split(rows) if len(jobs) > 1 else (latents,)
        datas = (None,) * len(jobs) if data is None else data.split(rows) if len(jobs) > 1 else (data,)
        for job, new, datum in zip(jobs, news, datas, strict=True):
            if job.keep is not None:
                new, datum = job.keep.after_step(job.step, new, datum)
            job.latents, job.previous = new, datum
            job.step += 1

    def unet_rows(self, rows: int) -> int:
        """The rows the UNet runs for `rows`: the row multiple that keeps each row's result fixed, or the bucket
        that holds them when the UNet is compiled."""
        bucket = next((b for b in self.row_buckets if b >= rows), None)
        return bucket or math.ceil(rows / self.unet_row_multiple) * self.unet_row_multiple

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
        padded = self.unet_rows(rows)
        conditioning = {
            "encoder_hidden_states": pad_rows(generated, padded),
            "encoder_hidden_states_1": pad_rows(embeds, padded),
            "encoder_attention_mask_1": pad_rows(mask, padded),
        }
        sample, timesteps = pad_rows(sample, padded), pad_rows(timesteps, padded)
        if self.compiled is not None:
            return self.compiled(sample, timesteps, **conditioning)[:rows]
        return self.pipe.unet(sample, timesteps, return_dict=False, **conditioning)[0][:rows]

    @torch.no_grad()
    def warm_up(self) -> float:
        """Compile the UNet for every row bucket and both kinds of length; the seconds it took (0 when eager)."""
        if self.compiled is None:
            return 0.0
        cond = self.stack([self.encode("", "", guidance=False)], [1])
        return self.compiled.warm_up(
            lambda rows, frames: self.unet(*self.blank_pass(cond, rows, frames)), self.row_buckets, self.window_frames
        )

    def blank_pass(
        self, cond: Conditioning, rows: int, frames: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`unet`'s arguments for `rows` rows of zero latents `frames` long under one stacked conditioning (T5
        tokens padded as every pass's are), with the types a pass has: what warms a compiled UNet up, and what a
        benchmark times it on."""
        channels, bins = self.pipe.unet.config.in_channels, self.mel_bins // self.pipe.vae_scale_factor
        sample = torch.zeros(rows, channels, frames, bins, device=self.device, dtype=self.dtype)
        timesteps = torch.tensor([1] * rows).to(self.device)  # int64, as a pass's host timesteps are
        return sample, timesteps, cond.prompt_embeds, cond.attention_mask, cond.generated_embeds

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

    def decode_edit(self, job: Denoising, keep: Keep) -> Pieces[torch.Tensor]:
        """An edit's output: the clip's round trip (as `decode` gives a transform of strength 0), with the edited
        crop of the canvas decoded and crossfaded in by the mask (models/editing.py)."""
        crop = keep.layout.crop(keep.host_mask, self.sample_rate)
        round_trip = self.decode(keep.clip_latents, keep.layout.clip_samples)
        edited = self.decode(job.latents[:, :, crop[0] : crop[1]], (crop[1] - crop[0]) * keep.layout.frame_samples)

        def work() -> Work[torch.Tensor]:
            kept = yield from round_trip.work
            yield
            new = yield from edited.work
            return keep.layout.assemble(kept, new, crop, keep.host_mask)

        return Pieces(work(), round_trip.total + edited.total)

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
            return self._start(job, latents, Schedule.of(scheduler), frames, job.num_waveforms, samples)

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
            schedule = Schedule.of(scheduler, start * scheduler.order)
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
            return self._start(job, latents, schedule, frames, 1, len(job.samples))

        return Pieces(work(), encoding.total if encoding else 1)

    def start_edit(self, job: EditJob) -> Pieces[Denoising]:
        """Encode the clip once, as a transform does, and lay it on the edit's canvas; start from noise where the
        mask writes and from the clip noised to the first step's level elsewhere (models/editing.py). Only the
        windows that overlap the written frames are denoised."""
        samples = job.samples
        clip_mel_frames = self.mel_frames(len(samples) / self.sample_rate)
        clip_frames = clip_mel_frames // self.pipe.vae_scale_factor
        encoding = self.encode_audio(samples, clip_mel_frames)
        span = job.span(len(samples), self.sample_rate)
        layout = Layout.of(span, len(samples), self.sample_rate, self.latent_frame_samples, clip_frames)
        mask = layout.mask(job.blend_s, self.sample_rate)
        mel_frames = layout.frames * self.pipe.vae_scale_factor

        def work() -> Work[Denoising]:
            with phase("encode_audio", latent_frames=clip_frames, pieces=encoding.total):
                clip_latents = yield from encoding.work
            scheduler = self.make_scheduler(job.scheduler, job.steps)
            noise = self.initial_noise(waveform_seeds(job), mel_frames)
            keep = Keep.of(layout, clip_latents, noise, mask, scheduler, job.repaint_jumps, job.seed)
            windows = replace(self.windows(mel_frames), only=written_frames(mask))
            latents = keep.start(noise * scheduler.init_noise_sigma)
            samples_out = layout.total_samples
            return self._start(
                job, latents, keep.schedule, mel_frames, job.num_waveforms, samples_out, windows=windows, keep=keep
            )

        return Pieces(work(), encoding.total)

    def _start(
        self,
        job: DiffusionParams,
        latents: torch.Tensor,
        schedule: Schedule,
        mel_frames: int,
        waveforms: int,
        samples: int,
        windows: Windows | None = None,
        keep: Keep | None = None,
    ) -> Denoising:
        guidance = uses_guidance(job.guidance_scale)
        cond = Conditioning(latents.new_empty(0), latents.new_empty(0), latents.new_empty(0))
        if schedule.timesteps:
            with phase("encode", prompts=1):
                cond = self.stack([self.encode(job.prompt, job.negative_prompt, guidance)], [waveforms])
        scales = None
        if guidance:
            scales = torch.full((waveforms, 1, 1, 1), job.guidance_scale, device=self.device, dtype=self.dtype)
        windows = windows or self.windows(mel_frames)
        fusion = Fusion(latents, windows) if windows.fused else None
        return Denoising(
            latents, cond, scales, schedule, windows, [samples] * waveforms, job.prompt, fusion=fusion, keep=keep
        )

    def finish(self, job: Denoising) -> Pieces[JobAudio]:
        """Decode a denoised job's waveforms, cut to length, and rank them by CLAP when there are several: in the
        pieces of `decode`, the last also ranking."""
        if self._last_plan is not None and any(part is job for part, _ in self._last_plan.parts):
            self._last_plan = None  # holds its jobs' latents and conditioning
        length = max(job.lengths)
        decoding = self.decode(job.latents, length) if job.keep is None else self.decode_edit(job, job.keep)

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
