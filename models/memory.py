"""How a runner's model is placed and stored: device, dtype, offloading, attention. Checked before loading.

Each choice is a setting per runner (settings.py). A combination that cannot work on this machine is refused
at start-up with the reason (never a silent fallback): float16 on a CPU, offloading without a GPU,
FlashAttention 2 without CUDA or its package, int8 weights with sequential offload.

Weight quantization (`int8`) is torchao's weight-only int8 on the linear layers of the models that hold most of
the weights: AudioLDM2's UNet and text encoders (CLAP text, T5, GPT-2), Music Flamingo's language model. The
VAE, vocoder, projection, audio encoder and projector stay as they are: they are small, and the VAE, vocoder and
audio encoder are convolutional or sensitive at their ends, where int8 costs the most fidelity for the least
memory.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
Offload = Literal["none", "model", "sequential"]
Attention = Literal["sdpa", "eager", "flash_attention_2"]
Quantization = Literal["none", "int8"]


class UnsupportedMemoryOption(ValueError):
    """A setting this machine or its libraries cannot honour; the runner does not start."""


@dataclass(frozen=True)
class MemoryOptions:
    dtype: str = "auto"  # auto: the GPU's half type on CUDA, float32 on a CPU
    offload: Offload = "none"
    attention_slicing: bool = False
    attention: Attention = "sdpa"
    quantization: Quantization = "none"


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
        )


def place(runner: str, options: MemoryOptions, gpu_dtype: torch.dtype, cuda: bool | None = None) -> Placement:
    """The device and dtype `options` ask for, or UnsupportedMemoryOption saying why they cannot be had."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    device = torch.device("cuda" if cuda else "cpu")
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
    elif options.quantization != "none":
        raise UnsupportedMemoryOption(f"{runner}: quantization {options.quantization!r} is not one of none, int8")
    return Placement(device, dtype, options)


def quantize_linear_weights(*modules: torch.nn.Module) -> None:
    """torchao's weight-only int8 on every linear layer of `modules` (in place): weights take a quarter of float32."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    for module in modules:
        quantize_(module, Int8WeightOnlyConfig())
