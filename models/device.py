"""Where a model runs: the GPU in half precision when there is one, else the CPU in fp32."""

from __future__ import annotations

import torch


def pick_device(gpu_dtype: torch.dtype) -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), gpu_dtype
    return torch.device("cpu"), torch.float32
