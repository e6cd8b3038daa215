"""AudioLDM2's UNet under `torch.compile`, compiled at start-up for every shape a pass can take.

A pass's shape is its rows (jobs x waveforms x guidance halves) by its latent frames (a clip's length, or a
long clip's window). Rows are padded up to a few buckets (the engine's row multiple times 1, 2, 4, ...) and
both dimensions are marked dynamic, so one compiled graph serves many shapes. Dynamo still specialises where
the UNet's Python branches on a shape: a length that is a multiple of its up factor or not (the branch that
forwards upsample sizes), and ranges of rows where a kernel choice differs. `warm_up` therefore runs every
bucket at a length of each kind before the runner takes requests, so no request waits for a compile; what a
shape of a request could still cost, tests/test_compiled_unet.py and bench/compile.py count (recompilations).

Compiled artifacts go to a cache folder (runners/startup.py), so a restart loads them instead of compiling
again. With `reduce-overhead` the UNet replays CUDA graphs, whose outputs live in
memory the next replay overwrites: each call starts a new step and hands back a copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, get_args

import torch
from diffusers import AudioLDM2UNet2DConditionModel

from compat.diffusers_unet_logging import ignore_unet_forward_logging
from models.memory import BITSANDBYTES, Placement, UnsupportedMemoryOption
from settings import UNetCompile

COMPILE_MODES: tuple[str, ...] = get_args(UNetCompile)


def row_buckets(multiple: int, max_rows: int) -> tuple[int, ...]:
    """The row counts a compiled UNet runs: `multiple` doubled until one holds `max_rows`."""
    buckets = [multiple]
    while buckets[-1] < max_rows:
        buckets.append(buckets[-1] * 2)
    return tuple(buckets)


def check_compile(mode: UNetCompile, placement: Placement) -> None:
    """Refuse, with the reason, what does not compile with the runner's placement (at start-up, before loading)."""
    options = placement.options
    if mode == "reduce-overhead" and placement.device.type != "cuda":
        raise UnsupportedMemoryOption("AudioLDM2: compile=reduce-overhead replays CUDA graphs and needs a CUDA GPU")
    if mode != "none" and options.offload != "none":
        raise UnsupportedMemoryOption(
            f"AudioLDM2: a compiled UNet stays on its device; offload={options.offload} moves it (use offload=none)"
        )
    if mode != "none" and options.quantization in BITSANDBYTES:
        raise UnsupportedMemoryOption(
            f"AudioLDM2: bitsandbytes weights ({options.quantization}) do not compile; use int8 or none"
        )


class CompiledUNet:
    """Callable as the UNet is by the engine (`unet(sample, timesteps, **conditioning)` -> noise), compiled."""

    def __init__(self, unet: AudioLDM2UNet2DConditionModel, mode: UNetCompile, backend: str = "inductor") -> None:
        """`backend`: inductor to serve; `eager` runs dynamo alone (its guards and recompilations, in seconds)."""
        if mode not in COMPILE_MODES or mode == "none":
            raise ValueError(f"compile mode {mode!r} is not one of {', '.join(COMPILE_MODES[1:])}")
        options = {"mode": mode} if backend == "inductor" and mode != "default" else {}
        self.mode = mode
        self.up_factor: int = 2**unet.num_upsamplers  # lengths not a multiple of it take the UNet's other branch
        self._forward: Callable[..., Any] = torch.compile(unet, backend=backend, dynamic=False, **options)
        self._graphs = mode == "reduce-overhead"

    def __call__(self, sample: torch.Tensor, timesteps: torch.Tensor, **conditioning: torch.Tensor) -> torch.Tensor:
        for tensor in (sample, timesteps, *conditioning.values()):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        torch._dynamo.maybe_mark_dynamic(sample, 2)
        if self._graphs:
            torch.compiler.cudagraph_mark_step_begin()
        noise = self._forward(sample, timesteps, return_dict=False, **conditioning)[0]
        return noise.clone() if self._graphs else noise

    def warm_up(self, run: Callable[[int, int], None], buckets: tuple[int, ...], frames: int) -> float:
        """Call `run(rows, frames)` for every bucket at `frames` (a multiple of the up factor) and at a length that
        is not one, on the thread that will run the UNet; the seconds it took (the compilations)."""
        if frames % self.up_factor:
            raise ValueError(f"warm-up length {frames} is not a multiple of the UNet's up factor {self.up_factor}")
        ignore_unet_forward_logging()  # dynamo's settings are per thread: this one compiles
        started = time.perf_counter()
        for rows in buckets:
            for length in (frames, frames - 1):
                run(rows, length)
        return time.perf_counter() - started
