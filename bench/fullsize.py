"""Full-size model speed with random weights: AudioLDM2 base/large and Music Flamingo (AF3 encoder + Qwen2.5-7B).

Random weights cost exactly what the published ones cost (same shapes, same kernels), so this measures the
real models' speed without downloading them. Every architecture is built in code from published facts:

* AudioLDM2 (diffusers' `scripts/convert_original_audioldm2_to_diffusers.py` DEFAULT_CONFIG and the original
  `audioldm2/utils.py`): UNet with 128 model channels x (1, 2, 3, 5), 2 res blocks, attention at the three
  lower resolutions with 32-channel heads, each attention a self-attention + GPT-2 (768) + T5 (1024)
  transformer; `large` = transformer depth 2 plus a trailing self-attention. VAE 128 x (1, 2, 4), 8 latent
  channels. CLAP = laion/clap-htsat-unfused (transformers' ClapConfig defaults), T5 encoder = flan-t5-large,
  GPT-2 base language model (8 generated tokens), HiFi-GAN 1024 channels, upsampling 5x4x2x2x2, 16 kHz.
* Music Flamingo (`nvidia/music-flamingo-hf` = AudioFlamingo3ForConditionalGeneration): Whisper-large-v3
  encoder (transformers' AudioFlamingo3EncoderConfig defaults: 32 layers, 1280 wide, 128 mel bins) + 2-layer
  GELU projector + Qwen2.5-7B (28 layers, 3584 wide, MLP 18944, 28 heads, 4 KV heads, vocab 152064).

Tokenizers, processor and scheduler come from the tiny profile (models/tiny_*.py): token ids only index
the full-size embeddings, and prompt lengths stay realistic. Each model runs through its runner's own loop:
AudioLDM2 through the step scheduler on a model thread (runners/audioldm2_in_process.py), with the time of
each model phase of a batch; Music Flamingo through run_in_groups.

    .venv/bin/python bench/fullsize.py            # on a GPU: every measurement, ~5 min on an H100/H200
    .venv/bin/python bench/fullsize.py --smoke    # on a CPU in seconds: same code, tiny models, few steps
    .venv/bin/python bench/fullsize.py --write-random DIR   # the `random` profile's folders (models/profiles.py)

The report is rewritten after every measured row, so a run stopped by a time limit keeps what it measured;
`--budget-s` stops starting new cases once that many seconds have passed (they are listed as skipped).
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AudioLDM2Pipeline,
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AutoencoderKL,
)
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    AudioFlamingo3Config,
    AudioFlamingo3EncoderConfig,
    AudioFlamingo3ForConditionalGeneration,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2Config,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
)

from bench.common import (  # noqa: E402
    DEFAULT_OUT,
    fmt,
    header,
    header_markdown,
    tensor_bytes,
    write_json,
    write_report,
)
from models import tiny_music_flamingo  # noqa: E402
from models.audioldm2 import AudioLDM2Engine, load_pipeline  # noqa: E402
from models.local_tokenizers import CORPUS  # noqa: E402
from models.memory import quantize_linear_weights  # noqa: E402
from models.music_flamingo import CritiqueJob, MusicFlamingoEngine  # noqa: E402
from models.profiles import random_weights_folder  # noqa: E402
from models.tiny_audioldm2 import build_tiny_audioldm2, save_tiny_audioldm2  # noqa: E402
from presets import PRESET_PROMPTS, Preset  # noqa: E402
from registry import AUDIOLDM2, MUSIC_FLAMINGO  # noqa: E402
from runners.audioldm2_in_process import InProcessScheduler  # noqa: E402
from runners.batching import GroupRun, run_in_groups  # noqa: E402
from runners.model_thread import ModelThread  # noqa: E402
from schemas import GenerationJob, Scheduler  # noqa: E402
from settings import UNetCompile  # noqa: E402
from tests.audio_files import stereo_tone  # noqa: E402

# ---- published architectures -------------------------------------------------------------

T5_MAX_TOKENS = 128  # AudioLDM2 hard-codes flan-t5's tokenizer length to 128 (conversion script)
GPT2_NEW_TOKENS = 8  # sequence_gen_length of the original config
CLAP_MAX_TOKENS = 512  # RoBERTa's limit; the pipeline pads CLAP prompts to the tokenizer's max length

# Published sizes, for the sanity check of what is built here (AudioLDM2 paper / model cards; Qwen2.5 report).
PUBLISHED = {
    "audioldm2-base unet": (350e6, 0.10),  # "AudioLDM2 ... 350M UNet" (cvssp/audioldm2 card)
    "audioldm2-base total": (1.1e9, 0.10),  # "1.1B" total with encoders
    "audioldm2-large unet": (750e6, 0.10),  # "750M UNet" (cvssp/audioldm2-large card)
    "audioldm2-large total": (1.5e9, 0.10),  # "1.5B" total
    "music-flamingo language_model": (7.61e9, 0.03),  # Qwen2.5-7B: 7.61B
    "music-flamingo audio_encoder": (0.635e9, 0.05),  # Whisper-large-v3 encoder: ~635M
}


def audioldm2_unet(size: str) -> AudioLDM2UNet2DConditionModel:
    """The AudioLDM2 UNet of `size` (`base`: 350M, `large`: 750M)."""
    depth, cross = {"base": (1, (None, 768, 1024)), "large": (2, (None, 768, 1024, None))}[size]
    return AudioLDM2UNet2DConditionModel(
        in_channels=8,
        out_channels=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(128, 256, 384, 640),
        layers_per_block=2,
        cross_attention_dim=(cross,) * 4,
        transformer_layers_per_block=depth,
        attention_head_dim=(4, 8, 12, 20),  # diffusers' legacy name for the head count: 32 channels per head
        sample_size=256,  # latent frames of the native 10.24 s clip (the long-form window length)
    )


def full_vae() -> AutoencoderKL:
    """AudioLDM2's VAE architecture (all three checkpoints), random weights."""
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(128, 256, 512),
        layers_per_block=2,
        latent_channels=8,
        sample_size=1024,  # mel frames of the native 10.24 s clip
    )


def full_vocoder() -> SpeechT5HifiGan:
    """AudioLDM2's HiFi-GAN vocoder architecture (16 kHz), random weights."""
    return SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=64,
            sampling_rate=16_000,
            upsample_initial_channel=1024,
            upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[16, 16, 8, 4, 4],
            resblock_kernel_sizes=[3, 7, 11],
            resblock_dilation_sizes=[[1, 3, 5]] * 3,
            normalize_before=False,
        )
    )


def audioldm2_components(size: str) -> dict[str, nn.Module]:
    """Every model of a full-size AudioLDM2 pipeline, random weights (build under a device context)."""
    language_model_config = GPT2Config()  # gpt2 base
    language_model_config.max_new_tokens = GPT2_NEW_TOKENS
    return {
        "unet": audioldm2_unet(size),
        "vae": full_vae(),
        "text_encoder": ClapModel(ClapConfig()),  # laion/clap-htsat-unfused sizes
        "text_encoder_2": T5EncoderModel(
            T5Config(
                vocab_size=32128,
                d_model=1024,
                d_ff=2816,
                d_kv=64,
                num_heads=16,
                num_layers=24,
                feed_forward_proj="gated-gelu",
                tie_word_embeddings=False,
            )
        ),
        "language_model": GPT2LMHeadModel(language_model_config),
        "projection_model": AudioLDM2ProjectionModel(
            text_encoder_dim=512, text_encoder_1_dim=1024, langauge_model_dim=768
        ),
        "vocoder": full_vocoder(),
    }


def full_audioldm2(size: str, device: torch.device, dtype: torch.dtype) -> AudioLDM2Pipeline:
    """A full-size pipeline on `device`, weights created there; tokenizers and scheduler of the tiny profile."""
    tiny = build_tiny_audioldm2()
    tokenizer, tokenizer_2 = copy.deepcopy(tiny.tokenizer), copy.deepcopy(tiny.tokenizer_2)
    tokenizer.model_max_length, tokenizer_2.model_max_length = CLAP_MAX_TOKENS, T5_MAX_TOKENS
    with torch.device(device):
        components = audioldm2_components(size)
    pipe = AudioLDM2Pipeline(
        **components,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=ClapFeatureExtractor(),
        scheduler=tiny.scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def smoke_audioldm2(device: torch.device, dtype: torch.dtype, workdir: Path) -> AudioLDM2Pipeline:
    """The tiny pipeline, saved and loaded through the runner's own loader."""
    build_tiny_audioldm2().save_pretrained(workdir / "tiny-audioldm2")
    return load_pipeline(str(workdir / "tiny-audioldm2"), device, dtype)


def qwen25_7b_config(layers: int = 28) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=layers,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=False,
    )


def music_flamingo_config(processor: ProcessorMixin, layers: int | None = None) -> AudioFlamingo3Config:
    """`nvidia/music-flamingo-hf`'s layout at full size; special token ids from `processor`'s tokenizer.

    `layers` keeps every width but cuts both towers to that many layers (the preflight's wiring check).
    """
    sound = processor.tokenizer.convert_tokens_to_ids(tiny_music_flamingo.SOUND)
    audio, text = AudioFlamingo3EncoderConfig(), qwen25_7b_config()  # Whisper-large-v3 encoder, Qwen2.5-7B
    if layers is not None:
        audio, text = AudioFlamingo3EncoderConfig(num_hidden_layers=layers), qwen25_7b_config(layers)
    return AudioFlamingo3Config(audio_config=audio.to_dict(), text_config=text.to_dict(), audio_token_id=sound)


def for_timing(model: PreTrainedModel, processor: ProcessorMixin) -> PreTrainedModel:
    """No end-of-turn token: random weights would stop at random points; every row decodes its full budget."""
    model.generation_config = GenerationConfig(
        eos_token_id=None, pad_token_id=processor.tokenizer.pad_token_id, do_sample=False
    )
    return model.eval()


def full_music_flamingo(
    device: torch.device, dtype: torch.dtype, layers: int | None = None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    processor = tiny_music_flamingo.build_processor(tiny_music_flamingo.AF3_VARIANT)
    with torch.device(device):
        model = AudioFlamingo3ForConditionalGeneration._from_config(
            music_flamingo_config(processor, layers), dtype=dtype, attn_implementation="sdpa"
        )
    return for_timing(model, processor), processor


def smoke_music_flamingo(device: torch.device, dtype: torch.dtype) -> tuple[PreTrainedModel, ProcessorMixin]:
    model, processor = tiny_music_flamingo.build_tiny_music_flamingo(tiny_music_flamingo.AF3_VARIANT)
    return for_timing(model.to(device=device, dtype=dtype), processor), processor


# ---- parameter counts (meta device: no memory, ~1 s) ------------------------------------------


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts() -> dict[str, dict[str, int]]:
    """Full-size parameter counts per component, built on the meta device (shapes only)."""
    counts: dict[str, dict[str, int]] = {}
    with torch.device("meta"):
        for size in ("base", "large"):
            parts = {name: count(module) for name, module in audioldm2_components(size).items()}
            counts[f"audioldm2-{size}"] = {**parts, "total": sum(parts.values())}
        processor = tiny_music_flamingo.build_processor(tiny_music_flamingo.AF3_VARIANT)
        model = AudioFlamingo3ForConditionalGeneration(music_flamingo_config(processor))
    inner = model.model
    counts["music-flamingo"] = {
        "audio_encoder": count(inner.audio_tower),
        "projector": count(inner.multi_modal_projector),
        "language_model": count(inner.language_model) + count(model.lm_head),
        "total": count(model),
    }
    return counts


def published_checks(counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    checks = []
    for name, (published, tolerance) in PUBLISHED.items():
        model, part = name.rsplit(" ", 1)
        value = counts[model][part]
        low, high = published * (1 - tolerance), published * (1 + tolerance)
        checks.append(
            {"name": name, "params": value, "published": published, "range": [low, high], "ok": low <= value <= high}
        )
    return checks


# ---- timing helpers ----------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Wall seconds of the block (device work included) and the device's peak memory in it (CUDA only)."""
    result: dict[str, float | None] = {}
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    yield result
    synchronize(device)
    result["s"] = time.perf_counter() - started
    result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- AudioLDM2 -------------------------------------------------------------------------------

SOUND_PROMPTS = [line for line in CORPUS if not line.startswith(("Describe", "Give", "Compare", "What", "Low"))]


COMPILE_MODES: tuple[str, ...] = get_args(UNetCompile)  # AUDIO_STUDIO_AUDIOLDM2_COMPILE's values; none: eager
WARMUP_STEPS = 2  # a warm-up batch runs every shape of the timed one (encode, passes, decode) at a fraction of its cost


@dataclass(frozen=True)
class DiffusionCase:
    dtype: torch.dtype
    scheduler: Scheduler
    steps: int
    compile: str  # one of COMPILE_MODES
    batches: tuple[int, ...]
    durations: tuple[float, ...]


def audioldm2_cases(
    smoke: bool, device: torch.device, long_clip_s: float, compile_modes: Sequence[str], serving_only: bool
) -> list[DiffusionCase]:
    """The serving configuration (half, DPM++ 25) per compile mode at batch 1/4/8, then unless `serving_only`
    fp32 and DDIM 200 beside it (smoke: few steps, batch 1/2).

    The serving configuration also renders `long_clip_s` clips (long-form windows and tiled decoding) when it is
    above 0; the smoke form keeps 1 s clips.
    """
    half = torch.float16 if device.type == "cuda" else torch.bfloat16  # CPU: bf16 kernels exist, fp16 convs not all
    dpm, ddim = (2, 2) if smoke else (25, 200)
    batches = (1, 2) if smoke else (1, 4, 8)
    short = (1.0,) if smoke else (10.0,)
    serving = short if smoke or long_clip_s <= 0 else (*short, long_clip_s)
    cases = [DiffusionCase(half, Scheduler.DPMPP, dpm, mode, batches, serving) for mode in compile_modes]
    if serving_only:
        return cases
    return [
        *cases,
        DiffusionCase(torch.float32, Scheduler.DPMPP, dpm, "none", (1,) if smoke else (1, 8), short),
        DiffusionCase(half, Scheduler.DDIM, ddim, "none", (1,), short),
    ]


def run_audioldm2(
    scheduled: InProcessScheduler, case: DiffusionCase, batch: int, duration: float, device: torch.device
) -> dict[str, Any]:
    """One warm-up batch of WARMUP_STEPS steps, then one timed batch, each as one runner batch."""
    jobs = [
        GenerationJob(
            prompt=SOUND_PROMPTS[i % len(SOUND_PROMPTS)],
            duration=duration,
            steps=case.steps,
            scheduler=case.scheduler,
            seed=i,
        )
        for i in range(batch)
    ]
    with timed(device) as warmup:
        scheduled.generate([job.model_copy(update={"steps": min(case.steps, WARMUP_STEPS)}) for job in jobs])
    with timed(device) as t:
        runs = scheduled.generate(jobs)
    errors = [r.error.message for r in runs if r.error is not None]
    phases = phase_seconds(runs)
    return {
        "dtype": str(case.dtype).removeprefix("torch."),
        "scheduler": case.scheduler.value,
        "steps": case.steps,
        "compile": case.compile,
        "batch": batch,
        "duration_s": duration,
        "warmup_s": warmup["s"],
        "wall_s": t["s"],
        "s_per_clip": t["s"] / batch,
        "clips_per_s": batch / t["s"],
        "phases_s": phases,
        "denoise_step_ms": 1000 * phases.get("denoise", 0.0) / case.steps,
        "peak_gib": t["peak_gib"],
        "finite": all(r.output is not None and r.output.finite for r in runs),
        "errors": errors,
    }


def phase_seconds(runs: Sequence[GroupRun[Any]]) -> dict[str, float]:
    """Seconds of one batch in each model phase (encode, denoise, decode, rank): the union of its jobs' intervals,
    so passes the jobs shared count once. Host clock: the GPU may finish a phase's queued work in the next."""
    intervals: dict[str, list[tuple[int, int]]] = {}
    for run in runs:
        for phase in run.phases:
            intervals.setdefault(phase.name, []).append((phase.start_ns, phase.end_ns))
    return {name: covered_ns(spans) / 1e9 for name, spans in intervals.items()}


def covered_ns(spans: list[tuple[int, int]]) -> int:
    """Nanoseconds covered by at least one of `spans`."""
    total, reached = 0, None
    for start, end in sorted(spans):
        if reached is None or start > reached:
            total, reached = total + end - start, end
        elif end > reached:
            total, reached = total + end - reached, end
    return total


@dataclass
class Progress:
    """Where the rows go as they are measured: the report is saved after each, and cases stop at the budget."""

    rows: list[dict[str, Any]]
    skipped: list[str]
    save: Callable[[], None]
    log: Callable[[str], None]
    deadline: float

    def within_budget(self, case: str) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.skipped.append(case)
        self.log(f"skipped (time budget): {case}")
        return False

    def add(self, row: dict[str, Any], message: str) -> None:
        self.rows.append(row)
        self.save()
        self.log(message)


def bench_audioldm2(
    sizes: list[str], smoke: bool, device: torch.device, workdir: Path, progress: Progress, cases: list[DiffusionCase]
) -> None:
    thread = ModelThread("audioldm2-model")  # serves each case's engine in turn, as the runner's serves its one
    for size in sizes:
        for case in cases:
            if size == "large" and (case.dtype == torch.float32 or case.scheduler is Scheduler.DDIM):
                continue  # large: the serving configuration only (half precision, DPM++), per compile mode
            name = f"AudioLDM2 {size} {case.dtype} {case.scheduler.value} {case.steps} compile={case.compile}"
            if not progress.within_budget(name):
                continue
            pipe = smoke_audioldm2(device, case.dtype, workdir) if smoke else full_audioldm2(size, device, case.dtype)
            # As runners/audioldm2.py builds it: compiled for every pass shape on the model thread before any job.
            engine = thread.call(functools.partial(AudioLDM2Engine, pipe, compile=case.compile))
            compile_warm_up_s = thread.call(engine.warm_up)
            scheduled = InProcessScheduler(engine, thread)
            for duration in case.durations:
                for batch in case.batches:
                    if not progress.within_budget(f"{name} batch {batch} {duration:g} s"):
                        continue
                    row = run_audioldm2(scheduled, case, batch, duration, device)
                    row |= {"model": "tiny" if smoke else size, "compile_warm_up_s": compile_warm_up_s}
                    progress.add(
                        row,
                        f"AudioLDM2 {row['model']} {row['dtype']} {row['scheduler']} {row['steps']} "
                        f"compile={case.compile} batch {batch} {duration:g} s: {row['s_per_clip']:.3f} s/clip, "
                        f"{row['denoise_step_ms']:.1f} ms per step, peak {fmt(row['peak_gib'])} GiB",
                    )
            scheduled.close()  # the thread lets go of the engine: its memory is freed before the next case
            del scheduled, engine, pipe
            free(device)


# ---- Music Flamingo --------------------------------------------------------------------------


def memory_bandwidth(device: torch.device, smoke: bool) -> dict[str, Any]:
    """Measured copy bandwidth (read + write bytes / s), and the published figure for known GPUs."""
    size = (64 if smoke or device.type == "cpu" else 2048) * 2**20
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    repeats = 5
    with timed(device) as t:
        for _ in range(repeats):
            target.copy_(source)
    measured = 2 * size * repeats / t["s"]
    published = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        published = next((bw for key, bw in PUBLISHED_HBM.items() if key in name), None)
    del source, target
    return {"measured_bytes_per_s": measured, "published_bytes_per_s": published}


# Peak HBM bandwidth from the vendors' data sheets (nvidia-smi names the GPU, not its bandwidth).
PUBLISHED_HBM = {
    "H200": 4.8e12,
    "H100 NVL": 3.9e12,
    "H100 80GB HBM3": 3.35e12,
    "H100 PCIe": 2.0e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100 80GB PCIe": 1.935e12,
    "A100-SXM4-40GB": 1.555e12,
    "A100-PCIE-40GB": 1.555e12,
    "L40S": 0.864e12,
    "A10G": 0.6e12,
    "L4": 0.3e12,
}


def critique_job(clip: Any, new_tokens: int, seed: int) -> CritiqueJob:
    return CritiqueJob(prompt=PRESET_PROMPTS[Preset.FEEDBACK], clips=[clip], max_new_tokens=new_tokens, seed=seed)


@dataclass(frozen=True)
class FlamingoOptions:
    """What `bench_music_flamingo` times: KV-cache modes, weight quantization (the 12 GB preset's int8), batches."""

    decodings: tuple[str, ...] = ("dynamic",)
    quantization: str = "none"  # or int8: torchao weight-only on the language model, as the runner applies it
    batches: tuple[int, ...] | None = None  # None: 1/4/8 (smoke: 1/2)
    new_tokens: int = 256  # per decoding row (smoke: 8)


def bench_music_flamingo(
    smoke: bool, device: torch.device, report: dict[str, Any], progress: Progress, options: FlamingoOptions
) -> None:
    """Prefill (30 s clip + preset prompt, 1 new token) and decode speed at batch 1/4/8, against the bandwidth bound,
    for each KV-cache mode in `decodings` (dynamic, static, compiled: AUDIO_STUDIO_MUSIC_FLAMINGO_DECODING).

    Sets `report["music_flamingo"]` before the first run; its "runs" are `progress.rows`, saved as they come.
    The cache modes other than dynamic run at batch 1 and 8 only. Compiled decoding is warmed up first, as its
    runner does at start-up (`warm_up_s`), so no timed call compiles.
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, processor = smoke_music_flamingo(device, dtype) if smoke else full_music_flamingo(device, dtype)
    if options.quantization == "int8":
        quantize_linear_weights(model.model.language_model)
    engine = MusicFlamingoEngine(model, processor)
    clip = stereo_tone(30.0, rate=engine.sample_rate)[:, 0].copy()
    new_tokens = 8 if smoke else options.new_tokens
    batches = options.batches or ((1, 2) if smoke else (1, 4, 8))
    language_model = [model.model.language_model, model.lm_head]
    weight_bytes = sum(tensor_bytes(p) for m in language_model for p in m.parameters())
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    kv_bytes_per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * model.dtype.itemsize
    bandwidth = memory_bandwidth(device, smoke)

    with timed(device) as prep:
        engine.prepare([engine.conversation(critique_job(clip, 1, 0))])
    result = {
        "model": "tiny" if smoke else "music-flamingo (AF3 + Qwen2.5-7B)",
        "dtype": str(dtype).removeprefix("torch."),
        "quantization": options.quantization,
        "attention": model.config._attn_implementation,
        "clip_s": 30.0,
        "preprocess_s": prep["s"],
        "language_model_weight_bytes": weight_bytes,
        "kv_bytes_per_token": kv_bytes_per_token,
        "bandwidth": bandwidth,
        "runs": progress.rows,
    }
    report["music_flamingo"] = result
    cases = [(decoding, batch) for decoding in options.decodings for batch in batches]
    cases = [(d, b) for d, b in cases if d == "dynamic" or b in (batches[0], batches[-1])]
    for decoding, batch in cases:
        if not progress.within_budget(f"Music Flamingo {decoding} batch {batch}"):
            continue
        warm_up_s = None
        if engine.decoding != decoding:
            engine = MusicFlamingoEngine(model, processor, decoding=decoding)
            warm_up_s = engine.warm_up()

        def run(
            tokens: int, batch: int = batch, engine: MusicFlamingoEngine = engine
        ) -> tuple[dict[str, float | None], list[Any]]:
            jobs = [critique_job(clip, tokens, seed) for seed in range(batch)]
            with timed(device) as t:
                runs = run_in_groups(jobs, engine.group_key, engine.generate)
            return t, runs

        run(2)  # warm-up
        prefill, _ = run(1)
        full, runs = run(new_tokens)
        errors = [r.error.message for r in runs if r.error is not None]
        decode_s = full["s"] - prefill["s"]
        per_sequence = (new_tokens - 1) / decode_s if decode_s > 0 else None
        prompt_tokens = runs[0].output.prompt_tokens if runs[0].output else None
        context = (prompt_tokens or 0) + new_tokens // 2  # mean KV length while decoding
        step_bytes = weight_bytes + batch * context * kv_bytes_per_token
        bound = {
            name: bw / step_bytes
            for name, bw in (
                ("measured", bandwidth["measured_bytes_per_s"]),
                ("published", bandwidth["published_bytes_per_s"]),
            )
            if bw
        }
        row = {
            "decoding": decoding,
            "warm_up_s": warm_up_s,
            "batch": batch,
            "new_tokens": new_tokens,
            "prompt_tokens": prompt_tokens,
            "tokens_generated": [r.output.tokens_generated for r in runs if r.output],
            "prefill_s": prefill["s"],
            "total_s": full["s"],
            "decode_tokens_per_s_per_sequence": per_sequence,
            "decode_tokens_per_s_total": None if per_sequence is None else per_sequence * batch,
            "bound_steps_per_s": bound,
            "fraction_of_bound": {k: per_sequence / v for k, v in bound.items()} if per_sequence else {},
            "peak_gib": full["peak_gib"],
            "errors": errors,
        }
        progress.add(
            row,
            f"Music Flamingo {decoding} batch {batch}: prefill {row['prefill_s']:.3f} s, decode "
            f"{fmt(per_sequence, 1)} tok/s per sequence ({fmt(row['decode_tokens_per_s_total'], 1)} total), "
            f"peak {fmt(row['peak_gib'])} GiB",
        )


# ---- preflight ------------------------------------------------------------------------------


def preflight(device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Full-size builders through the engines, one step / two tokens: a wiring check before GPU minutes are spent.

    AudioLDM2 base complete (1.1B, ~5 GB in fp32: CPU is fine); Music Flamingo at full width with 2 layers per
    tower (all 7B would not fit a small machine's RAM). Checks shapes and flow, not speed.
    """
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    result: dict[str, Any] = {}
    job = GenerationJob(prompt=SOUND_PROMPTS[0], duration=1.0, steps=1, seed=0)
    with InProcessScheduler(AudioLDM2Engine(full_audioldm2("base", device, dtype))) as scheduled, timed(device) as t:
        [run] = scheduled.generate([job])
    assert run.error is None and run.output is not None, run.error
    result["audioldm2_base"] = {"s": t["s"], "samples": int(run.output.waveforms.shape[-1])}
    log(f"preflight AudioLDM2 base: 1 s clip, 1 step in {t['s']:.1f} s")
    del scheduled, run
    free(device)
    model, processor = full_music_flamingo(device, torch.bfloat16 if device.type == "cuda" else dtype, layers=2)
    flamingo = MusicFlamingoEngine(model, processor)
    clip = stereo_tone(30.0, rate=flamingo.sample_rate)[:, 0].copy()
    with timed(device) as t:
        [run] = run_in_groups([critique_job(clip, 2, 0)], flamingo.group_key, flamingo.generate)
    assert run.error is None and run.output is not None, run.error
    result["music_flamingo_2_layers"] = {"s": t["s"], "prompt_tokens": run.output.prompt_tokens}
    log(f"preflight Music Flamingo (full width, 2 layers): {run.output.prompt_tokens} prompt tokens in {t['s']:.1f} s")
    return result


# ---- the `random` profile's folders ------------------------------------------------------------


def write_random(root: Path, smoke: bool, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """AudioLDM2 base and Music Flamingo as the `random` profile serves them (models/profiles.py): full size in
    the dtypes the runners use on a GPU (smoke: the tiny builds), each written under its checkpoint name through
    a staging folder, so a reader never finds half a model. Returns the seconds and bytes of each."""
    half = torch.float16 if device.type == "cuda" else torch.float32

    def audioldm2(path: Path) -> None:
        if smoke:
            save_tiny_audioldm2(path)
            return
        full_audioldm2("base", device, half).save_pretrained(path)

    def music_flamingo(path: Path) -> None:
        if smoke:
            tiny_music_flamingo.save_tiny_music_flamingo(path, tiny_music_flamingo.AF3_VARIANT)
            return
        model, processor = full_music_flamingo(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
        model.save_pretrained(path)
        processor.save_pretrained(path)

    written: dict[str, Any] = {}
    for model_id, save in ((AUDIOLDM2.checkpoints[0], audioldm2), (MUSIC_FLAMINGO.checkpoints[0], music_flamingo)):
        target = random_weights_folder(root, model_id)
        staging = target.with_name(f".{target.name}-staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        started = time.perf_counter()
        save(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        written[model_id] = {"path": str(target), "s": time.perf_counter() - started, "bytes": size}
        log(f"wrote {model_id} ({size / 2**30:.2f} GiB) to {target} in {written[model_id]['s']:.1f} s")
        free(device)
    return written


# ---- report --------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Full-size model benchmark ({'smoke' if report['smoke'] else 'full'})", "", *header_markdown(report)]
    lines += ["", "| model | component | parameters |", "|---|---|---:|"]
    for model, parts in report["param_counts"].items():
        lines += [f"| {model} | {part} | {value / 1e6:,.1f} M |" for part, value in parts.items()]
    lines += ["", "| published size check | built | published | ok |", "|---|---:|---:|---|"]
    lines += [
        f"| {c['name']} | {c['params'] / 1e6:,.0f} M | {c['published'] / 1e6:,.0f} M | {'yes' if c['ok'] else 'NO'} |"
        for c in report["published_checks"]
    ]
    if report["audioldm2"]:
        lines += [
            "",
            "Each row: one batch through the step scheduler after a warm-up batch of "
            f"{WARMUP_STEPS} steps; phases in seconds of the batch (host clock), step = denoise / steps.",
            "",
            "| AudioLDM2 | dtype | scheduler | steps | compile | batch | clip s | s/clip | clips/s | encode s "
            "| denoise s | step ms | decode s | rank s | warm-up s | peak GiB |",
            "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["audioldm2"]:
            phases = r["phases_s"]
            compiled = f"{r['compile']} (warm-up {r['compile_warm_up_s']:.0f} s)" if r["compile_warm_up_s"] else "none"
            lines.append(
                f"| {r['model']} | {r['dtype']} | {r['scheduler']} | {r['steps']} | {compiled} | {r['batch']} "
                f"| {r['duration_s']:g} | {r['s_per_clip']:.3f} | {r['clips_per_s']:.2f} "
                f"| {fmt(phases.get('encode'), 3)} | {fmt(phases.get('denoise'), 3)} | {r['denoise_step_ms']:.1f} "
                f"| {fmt(phases.get('decode'), 3)} | {fmt(phases.get('rank'), 3)} | {r['warmup_s']:.1f} "
                f"| {fmt(r['peak_gib'])} |"
            )
    mf = report["music_flamingo"]
    if mf:
        bw = mf["bandwidth"]
        published = bw["published_bytes_per_s"] / 1e9 if bw["published_bytes_per_s"] else None
        lines += [
            "",
            f"Music Flamingo ({mf['model']}, {mf['dtype']}, weights {mf.get('quantization', 'none')}, attention "
            f"{mf['attention']}): language model weights "
            f"{mf['language_model_weight_bytes'] / 2**30:.2f} GiB; memory bandwidth measured "
            f"{bw['measured_bytes_per_s'] / 1e9:.0f} GB/s, published "
            f"{fmt(published, 0)} GB/s; preprocessing of one 30 s clip {mf['preprocess_s']:.3f} s",
            "",
            "| KV cache | batch | prompt tokens | new tokens | prefill s | decode tok/s per sequence "
            "| decode tok/s total | bound (measured bw) | fraction of bound | peak GiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in mf["runs"]:
            lines.append(
                f"| {r.get('decoding', 'dynamic')} | {r['batch']} | {r['prompt_tokens']} | {r['new_tokens']} "
                f"| {r['prefill_s']:.3f} "
                f"| {fmt(r['decode_tokens_per_s_per_sequence'], 1)} | {fmt(r['decode_tokens_per_s_total'], 1)} "
                f"| {fmt(r['bound_steps_per_s'].get('measured'), 1)} "
                f"| {fmt(r['fraction_of_bound'].get('measured'))} | {fmt(r['peak_gib'])} |"
            )
    if report["skipped"]:
        lines += ["", "Skipped (time budget): " + "; ".join(report["skipped"])]
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models, few steps/tokens, CPU is fine (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for fullsize[-smoke].json/.md")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--only", choices=["params", "audioldm2", "music-flamingo"], action="append")
    parser.add_argument("--sizes", default="base,large", help="AudioLDM2 sizes to time (full mode)")
    parser.add_argument("--long-clip-s", type=float, default=60.0, help="also time this clip length (0: none)")
    parser.add_argument("--name", default=None, help="report file name (default fullsize or fullsize-smoke)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new case after this many seconds")
    parser.add_argument("--mf-quantization", choices=["none", "int8"], default="none", help="Music Flamingo weights")
    parser.add_argument("--mf-batches", default=None, help="Music Flamingo batch sizes, comma-separated")
    parser.add_argument(
        "--mf-decoding",
        default="dynamic",
        help="Music Flamingo KV-cache modes to time, comma-separated: dynamic, static, compiled (CUDA)",
    )
    parser.add_argument("--mf-new-tokens", type=int, default=256, help="Music Flamingo tokens per decoding row")
    parser.add_argument(
        "--compile",
        type=lambda text: tuple(text.split(",")),
        default=("none",),
        help="AudioLDM2 UNet compile modes to time in the serving configuration, comma-separated: "
        f"{', '.join(COMPILE_MODES)} (each warmed up first, as the runner does at start-up)",
    )
    parser.add_argument(
        "--serving-only", action="store_true", help="AudioLDM2: the serving configuration only (half, DPM++ 25)"
    )
    parser.add_argument(
        "--preflight", action="store_true", help="only run the full-size builders for one step (wiring check)"
    )
    parser.add_argument(
        "--write-random",
        type=Path,
        metavar="DIR",
        help="only write the `random` profile's folders into DIR (full size; tiny with --smoke)",
    )
    args = parser.parse_args(argv)
    if unknown := set(args.compile) - set(COMPILE_MODES):
        parser.error(f"--compile: {', '.join(sorted(unknown))} not among {', '.join(COMPILE_MODES)}")
    auto = args.device == "auto"
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if auto else args.device)
    only = set(args.only or ["params", "audioldm2", "music-flamingo"])
    timing = only - {"params"}
    if auto and device.type != "cuda" and timing and not (args.smoke or args.preflight):
        parser.error("no GPU here: full-size timing on a CPU takes hours; use --smoke (or --device cpu to insist)")

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    torch.manual_seed(0)
    if args.preflight:
        write_json(args.out / "fullsize-preflight.json", header() | {"preflight": preflight(device, log)})
        return 0
    if args.write_random:
        written = write_random(args.write_random, args.smoke, device, log)
        write_json(args.out / f"{args.name or 'random-weights'}.json", header() | {"smoke": args.smoke, **written})
        return 0
    deadline = time.monotonic() + (args.budget_s if args.budget_s is not None else float("inf"))
    report: dict[str, Any] = header(None if argv is None else ["bench/fullsize.py", *argv])
    report |= {
        "smoke": args.smoke,
        "device": str(device),
        "torch_cuda": torch.version.cuda,
        "libraries": {"transformers": transformers.__version__, "diffusers": diffusers.__version__},
        # fp32 figures depend on these (PyTorch defaults: matmul TF32 off, cuDNN convolution TF32 on).
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "audioldm2": [],
        "music_flamingo": None,
        "skipped": [],
    }
    name = args.name or ("fullsize-smoke" if args.smoke else "fullsize")

    def save() -> None:
        report["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        write_report(args.out, name, report, markdown(report))

    counts = parameter_counts()  # always: it is what the smoke test checks, and it costs ~1 s
    report["param_counts"] = counts
    report["published_checks"] = published_checks(counts)
    for check in report["published_checks"]:
        log(f"{check['name']}: {check['params'] / 1e6:,.1f} M (published ~{check['published'] / 1e6:,.0f} M)")
    save()
    if "music-flamingo" in only:
        progress = Progress([], report["skipped"], save, log, deadline)
        options = FlamingoOptions(
            decodings=tuple(args.mf_decoding.split(",")),
            quantization=args.mf_quantization,
            batches=tuple(int(b) for b in args.mf_batches.split(",")) if args.mf_batches else None,
            new_tokens=args.mf_new_tokens,
        )
        bench_music_flamingo(args.smoke, device, report, progress, options)
        free(device)
    with tempfile.TemporaryDirectory(prefix="bench-fullsize-") as tmp:
        sizes = (
            [] if "audioldm2" not in only else [s for s in args.sizes.split(",") if s] if not args.smoke else ["tiny"]
        )
        progress = Progress(report["audioldm2"], report["skipped"], save, log, deadline)
        cases = audioldm2_cases(args.smoke, device, args.long_clip_s, args.compile, args.serving_only)
        bench_audioldm2(sizes, args.smoke, device, Path(tmp), progress, cases)
    free(device)
    save()
    log(f"wrote {args.out / (name + '.json')} and {args.out / (name + '.md')}")
    # The runners' loops turn a model fault into a per-job error: a benchmark that timed failures must fail.
    runs = report["audioldm2"] + (report["music_flamingo"] or {}).get("runs", [])
    errors = [e for r in runs for e in r["errors"]]
    for error in errors[:5]:
        log(f"ERROR: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
