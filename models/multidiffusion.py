"""MultiDiffusion over time: a long latent denoised as overlapping windows of the model's native length.

AudioLDM2 was trained on ~10 s clips; one latent much longer drifts. At every
step each window's noise is predicted on its own (windows are rows of the same
UNet pass), and the predictions are fused per latent frame: a weighted average
over the windows that cover it, with weights that ramp linearly across each
overlap so neighbouring windows hand over smoothly. The scheduler then steps
the whole latent (Bar-Tal et al., MultiDiffusion, 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Edges of a window weigh this much, not 0: the first and last frames of the latent are covered by one window only.
EDGE_WEIGHT = 1e-3


@dataclass(frozen=True)
class Windows:
    """Windows of `size` frames over a latent of `frames` frames, `overlap` frames shared by neighbours; with
    `only` (an edit's written frames, first and one past the last), just the windows that overlap them: the other
    windows' predictions would land on frames the edit replaces with the kept clip anyway."""

    frames: int
    size: int
    overlap: int
    only: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < self.size <= self.frames:
            raise ValueError(f"need 0 <= overlap < size <= frames, got {self.overlap}, {self.size}, {self.frames}")

    @property
    def starts(self) -> list[int]:
        """Evenly spaced starts, the first at 0 and the last at `frames - size`, no gap wider than size - overlap."""
        if self.frames == self.size:
            return [0]
        count = math.ceil((self.frames - self.size) / (self.size - self.overlap)) + 1
        span = self.frames - self.size
        starts = [round(i * span / (count - 1)) for i in range(count)]
        if self.only is None:
            return starts
        first, last = self.only
        return [start for start in starts if start < last and start + self.size > first]

    @property
    def fused(self) -> bool:
        """Smaller than the latent: its windows' predictions are fused (a single window is the latent itself)."""
        return self.size < self.frames

    def __len__(self) -> int:
        return len(self.starts)

    def weights(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Per-frame weight of one window, shape (size,): linear ramps over `overlap` frames at both ends."""
        weight = torch.ones(self.size, dtype=torch.float64)
        if self.overlap:
            ramp = torch.linspace(EDGE_WEIGHT, 1.0, self.overlap + 2, dtype=torch.float64)[1:-1]
            weight[: self.overlap] = ramp
            weight[-self.overlap :] = ramp.flip(0)
        return weight.to(device, dtype)


def split(latents: torch.Tensor, windows: Windows, first: int = 0, last: int | None = None) -> torch.Tensor:
    """Windows `first`..`last` of (rows, channels, frames, bins) as rows: (windows x rows, channels, size, bins),
    window-major (all rows of one window, then the next)."""
    starts = windows.starts[first:last]
    return torch.cat([latents[:, :, s : s + windows.size] for s in starts])


class Fusion:
    """Accumulates window predictions for one step and gives their per-frame weighted average.

    Windows may arrive over several UNet passes (a long job's step can be spread over iterations); the result
    depends only on the predictions, never on how they were split, because the sums run in window order. One
    fusion serves every step of a job (`reset`): the weights and their per-frame sum are computed once.
    """

    def __init__(self, like: torch.Tensor, windows: Windows) -> None:
        self.windows = windows
        self.weights = windows.weights(like.device, like.dtype).view(1, 1, -1, 1)
        self.total = torch.zeros_like(like)
        self.norm = torch.zeros(like.shape[2], device=like.device, dtype=like.dtype).view(1, 1, -1, 1)
        for start in windows.starts:
            self.norm[:, :, start : start + windows.size].add_(self.weights)
        if windows.only is not None:  # frames no window covers: a prediction of 0, not 0 / 0
            self.norm = torch.where(self.norm > 0, self.norm, torch.ones_like(self.norm))
        self.received = 0

    def add(self, predictions: torch.Tensor) -> None:
        """The next windows' predictions, window-major as `split` gives them."""
        rows = self.total.shape[0]
        for chunk in predictions.split(rows):
            start = self.windows.starts[self.received]
            self.total[:, :, start : start + self.windows.size].add_(chunk * self.weights)
            self.received += 1

    @property
    def complete(self) -> bool:
        return self.received == len(self.windows)

    def result(self) -> torch.Tensor:
        assert self.complete, f"{self.received} of {len(self.windows)} windows"
        return self.total / self.norm

    def reset(self) -> None:
        """Ready for the next step's windows."""
        self.total.zero_()
        self.received = 0
