"""How a runner's model is placed and stored: device, dtype, offloading, attention. Checked before loading.

Each choice is a setting per runner (settings.py). A combination that cannot work on this machine is refused
at start-up with the reason (never a silent fallback): float16 on a CPU, offloading without a GPU,
FlashAttention 2 without CUDA or its package, int8 weights with sequential offload.

Weight quantization applies to the linear layers of the models that hold most of the weights: AudioLDM2's UNet
and text encoders (CLAP text, T5, GPT-2), Music Flamingo's language model. The VAE, vocoder, projections, audio
encoder and projector stay as they are: they are small, and the VAE, vocoder and audio encoder are convolutional
or sensitive at their ends, where quantizing costs the most fidelity for the least memory. Three kinds:

* `int8`: torchao's weight-only int8, applied after loading; runs on CPUs and GPUs;
* `bnb-int8`: bitsandbytes' LLM.int8 (8-bit weights, outlier features in 16 bits), through the transformers and
  diffusers quantization configs at load time; on CUDA, and on CPUs for Music Flamingo (diffusers' quantizer
  needs a GPU);
* `nf4`: bitsandbytes' 4-bit NormalFloat with double quantization (QLoRA's format), computing in the runner's
  dtype; CUDA only here (its CPU path fails on layers narrower than its 64-value blocks, as the tiny models'
  are).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import Any

import torch

from settings import Attention, Decoding, Offload, Quantization, RunnerSettings

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BITSANDBYTES = ("bnb-int8", "nf4")


class UnsupportedMemoryOption(ValueError):
    """A setting this machine or its libraries cannot honour; the runner does not start."""


@dataclass(frozen=True)
class MemoryOptions:
    dtype: str = "auto"  # auto: the GPU's half type on CUDA, float32 on a CPU
    offload: Offload = "none"
    attention_slicing: bool = False
    attention: Attention = "sdpa"
    quantization: Quantization = "none"
    decoding: Decoding = "dynamic"  # static / compiled: a preallocated KV cache, the decoding step compiled or not;
    # auto (Music Flamingo's default): resolved by `place`
    gpu_memory_gib: float = 0.0  # > 0: at most this much of the weights on the GPU, the rest in CPU memory

    @classmethod
    def of(cls, settings: RunnerSettings) -> MemoryOptions:
        """The memory choices among a runner's settings (each kind has the ones its family can use)."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__ if hasattr(settings, name)})


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    options: MemoryOptions

    def describe(self) -> str:
        """For the start-up log line."""
        o = self.options
        return (
            f"device={self.device} dtype={str(self.dtype).removeprefix('torch.')} offload={o.offload} "
            f"attention={o.attention}{' sliced' if o.attention_slicing else ''} weights={o.quantization}"
            + ("" if o.decoding == "dynamic" else f" decoding={o.decoding}")
            + (f" gpu_memory={o.gpu_memory_gib:g}GiB+cpu" if o.gpu_memory_gib else "")
        )


def place(
    runner: str,
    options: MemoryOptions,
    gpu_dtype: torch.dtype,
    cuda: bool | None = None,
    bitsandbytes_on_cpu: tuple[str, ...] = (),
) -> Placement:
    """The device and dtype `options` ask for, or UnsupportedMemoryOption saying why they cannot be had.

    `bitsandbytes_on_cpu`: the bitsandbytes kinds this runner's loading library quantizes on a CPU (diffusers'
    quantizer needs a GPU; transformers' runs LLM.int8 on a CPU too).
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = torch.device("cuda" if cuda else "cpu")
    if options.decoding == "auto":  # compiled where it pays and can run: the whole model on a CUDA GPU
        whole_on_gpu = cuda and not options.gpu_memory_gib and options.quantization not in BITSANDBYTES
        options = replace(options, decoding="compiled" if whole_on_gpu else "dynamic")
    if options.dtype == "auto":
        dtype = gpu_dtype if cuda else torch.float32
    elif options.dtype in DTYPES:
        dtype = DTYPES[options.dtype]
    else:
        raise UnsupportedMemoryOption(f"{runner}: dtype {options.dtype!r} is not one of auto, {', '.join(DTYPES)}")
    if dtype == torch.float16 and not cuda:
        raise UnsupportedMemoryOption(
            f"{runner}: float16 needs a GPU (PyTorch lacks CPU kernels for some of its convolutions); "
            "use bfloat16 or float32 on a CPU"
        )
    if options.offload != "none" and not cuda:
        raise UnsupportedMemoryOption(
            f"{runner}: offload={options.offload} moves weights between GPU and CPU memory, and there is no GPU"
        )
    if options.attention == "flash_attention_2":
        if not cuda:
            raise UnsupportedMemoryOption(f"{runner}: flash_attention_2 runs on CUDA GPUs only")
        if importlib.util.find_spec("flash_attn") is None:
            raise UnsupportedMemoryOption(
                f"{runner}: flash_attention_2 needs the flash-attn package, which is not installed"
            )
        if dtype == torch.float32:
            raise UnsupportedMemoryOption(f"{runner}: flash_attention_2 needs float16 or bfloat16, not float32")
    if options.quantization == "int8":
        if importlib.util.find_spec("torchao") is None:
            raise UnsupportedMemoryOption(f"{runner}: int8 weights need the torchao package, which is not installed")
        if options.offload == "sequential":
            raise UnsupportedMemoryOption(
                f"{runner}: int8 weights and sequential offload do not combine (offload moves the weights "
                "module by module as float tensors); use offload=model"
            )
    elif options.quantization in BITSANDBYTES:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UnsupportedMemoryOption(
                f"{runner}: {options.quantization} weights need the bitsandbytes package, which is not installed"
            )
        if options.quantization == "nf4" and not cuda:
            raise UnsupportedMemoryOption(
                f"{runner}: nf4 weights run on CUDA GPUs only here (bitsandbytes' CPU 4-bit path fails on layers "
                "narrower than its 64-value blocks); use int8 on a CPU"
            )
        if not cuda and options.quantization not in bitsandbytes_on_cpu:
            raise UnsupportedMemoryOption(
                f"{runner}: {options.quantization} weights need a CUDA GPU (diffusers' bitsandbytes quantizer "
                "refuses a CPU); use int8 on a CPU"
            )
        if options.offload != "none":
            raise UnsupportedMemoryOption(
                f"{runner}: {options.quantization} weights stay on the device they were loaded on, and "
                f"offload={options.offload} moves them; use offload=none"
            )
    elif options.quantization != "none":
        raise UnsupportedMemoryOption(
            f"{runner}: quantization {options.quantization!r} is not one of none, int8, {', '.join(BITSANDBYTES)}"
        )
    if options.gpu_memory_gib:
        if not cuda:
            raise UnsupportedMemoryOption(
                f"{runner}: gpu_memory={options.gpu_memory_gib:g}GiB splits the weights between GPU and CPU memory, "
                "and there is no GPU"
            )
        if options.quantization != "none" or options.decoding == "compiled":
            raise UnsupportedMemoryOption(
                f"{runner}: a model split between GPU and CPU memory runs unquantized and uncompiled here; "
                "use quantization=none and decoding=dynamic or static, or fit it whole with int8 or nf4 weights"
            )
    if options.decoding not in ("dynamic", "static", "compiled"):
        raise UnsupportedMemoryOption(
            f"{runner}: decoding {options.decoding!r} is not one of dynamic, static, compiled"
        )
    return Placement(device, dtype, options)


def quantize_linear_weights(*modules: torch.nn.Module) -> None:
    """torchao's weight-only int8 on every linear layer of `modules` (in place): weights take a quarter of float32."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    for module in modules:
        quantize_(module, Int8WeightOnlyConfig())


def bitsandbytes_options(quantization: str, compute_dtype: torch.dtype) -> dict[str, Any]:
    """BitsAndBytesConfig arguments (transformers' and diffusers' take the same names), {} for other kinds."""
    if quantization == "bnb-int8":
        return {"load_in_8bit": True}
    if quantization == "nf4":
        return {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": compute_dtype,
        }
    return {}
