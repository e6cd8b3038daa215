"""Long audio through the VAE in tiles along time, with GroupNorm statistics shared by all tiles (decoder, and
encoder for long transforms), and through the vocoder in overlapping chunks. Memory stays that of one batch
of tiles, plus what goes in and comes out (latent, mel spectrogram, audio).

Decoding tiles independently (diffusers' `enable_tiling`) normalises each tile by its own statistics, so tiles
drift apart in level. Here every GroupNorm uses the statistics of the whole latent, computed before it is
applied: for each GroupNorm in the order the decoder runs them, the tiles are run up to it (earlier GroupNorms
already using whole-latent statistics) and its input is summed over each tile's own frames. That costs partial
decodes, one sweep per GroupNorm, instead of keeping every tile's activations (memory growing with the length).
Convolutions see a halo of neighbouring frames, so they are exact; attention in the mid-block attends within a
tile and its halo, as the model was trained on clips of about one tile.

Each sweep of one batch of tiles, and each vocoder chunk, is a piece (models/pieces.py): the step scheduler runs
other jobs' work and drops a cancelled job between two of them, and the GroupNorms are patched only while a
piece runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn
from torch.nn import functional as F

from models.pieces import Pieces, Work, within

TILE_HALO = 32  # latent frames of context on each side of a tile: more than the decoder's convolutions reach
TILES_PER_CALL = 4  # tiles decoded together (memory: this many tiles' activations, whatever the length)
VOCODER_CHUNK = 2048  # mel frames per vocoder call (about 20 s)
VOCODER_HALO = 64  # mel frames of context on each side: more than the vocoder's receptive field


class _StopForward(Exception):
    """Raised by the GroupNorm being measured: nothing after it is needed in this sweep."""


@dataclass
class _Tile:
    start: int  # first core latent frame
    stop: int  # end of the core
    left: int  # halo frames actually before the core
    length: int  # frames given to the decoder (halo + core + halo)


@dataclass
class _NormStats:
    """Per-group sums of one GroupNorm's input over every tile's core frames, and the statistics from them."""

    groups: int
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    count: int = 0
    mean: torch.Tensor | None = field(default=None, repr=False)
    var: torch.Tensor | None = field(default=None, repr=False)

    def add(self, core: torch.Tensor) -> None:
        """Sums over every frame of the cores (the batch rows are tiles of one waveform)."""
        grouped = core.double().transpose(0, 1).reshape(core.shape[1], -1)  # (channels, everything else)
        grouped = grouped.reshape(self.groups, -1)[None]
        total, squares = grouped.sum(-1), (grouped * grouped).sum(-1)
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += grouped.shape[-1]

    def finalize(self) -> None:
        assert self.total is not None and self.squares is not None
        self.mean = self.total / self.count
        self.var = (self.squares / self.count - self.mean * self.mean).clamp(min=0)


class SharedGroupNorms:
    """While active, the GroupNorms of a module normalise with whole-latent statistics, or measure them."""

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
        self.stats: dict[nn.GroupNorm, _NormStats] = {}
        self.measuring: nn.GroupNorm | None = None
        self.tile: _Tile | None = None
        self.bins = 0  # of the input
        self.order: list[nn.GroupNorm] = []

    @contextmanager
    def active(self) -> Iterator[SharedGroupNorms]:
        for norm in self.norms:
            norm.forward = functools.partial(self._forward, norm)  # type: ignore[method-assign]
        try:
            yield self
        finally:
            for norm in self.norms:
                del norm.forward

    def core(self, x: torch.Tensor) -> torch.Tensor:
        """The tile's own frames of a feature map: (batch, channels, time, bins), or (batch, channels, time x bins)
        as attention flattens it. Time and bins are the input's times one scale (up in a decoder, down in an
        encoder); tile edges are multiples of every downsampling, so the scaled edges are whole frames."""
        tile = self.tile
        assert tile is not None
        if x.dim() == 4:
            scale = Fraction(x.shape[2], tile.length)
            row = 1
        else:
            scale = Fraction(math.isqrt(round(Fraction(x.shape[2], tile.length * self.bins) * 10**12)), 10**6)
            row = int(self.bins * scale)  # values per time frame once flattened
        first = int(tile.left * scale) * row
        return x[:, :, first : first + int((tile.stop - tile.start) * scale) * row]

    def _forward(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        if norm not in self.order:
            self.order.append(norm)
        if norm is self.measuring:
            self.stats.setdefault(norm, _NormStats(norm.num_groups)).add(self.core(x))
            raise _StopForward
        stats = self.stats.get(norm)
        if stats is None or stats.mean is None or stats.var is None:
            return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        shape = x.shape
        grouped = x.reshape(shape[0], norm.num_groups, -1)
        mean = stats.mean.to(x.dtype)[..., None]
        std = torch.sqrt(stats.var.to(x.dtype)[..., None] + norm.eps)
        normalised = ((grouped - mean) / std).reshape(shape)
        if norm.affine:
            per_channel = (1, -1, *([1] * (x.dim() - 2)))
            normalised = normalised * norm.weight.view(per_channel) + norm.bias.view(per_channel)
        return normalised


def tiles(frames: int, size: int, halo: int = TILE_HALO) -> list[_Tile]:
    out = []
    for start in range(0, frames, size):
        stop = min(start + size, frames)
        left = min(halo, start)
        right = min(halo, frames - stop)
        out.append(_Tile(start, stop, left, left + (stop - start) + right))
    return out


def tiled(
    stage: Callable[[torch.Tensor], torch.Tensor],
    module: nn.Module,
    source: Callable[[], torch.Tensor],
    frames: int,
    tile_frames: int,
    halo: int,
    tiles_per_call: int = TILES_PER_CALL,
) -> Pieces[torch.Tensor]:
    """`stage(x)` for one (1, channels, `frames`, bins) input `x = source()`, computed tile by tile along time with the
    GroupNorms of `module` (the part of `stage` that has them) using whole-input statistics. Tiles of one shape
    (all but the first and last) run `tiles_per_call` at a time, as rows of one batch.

    In pieces: the first makes the input and runs one tile (the order the GroupNorms run in), then one piece per
    GroupNorm and batch of tiles (a partial run that measures it), and one per batch for the output."""
    plan = tiles(frames, tile_frames, halo)
    calls: dict[tuple[int, int, int], list[_Tile]] = {}
    for tile in plan:
        calls.setdefault((tile.left, tile.length, tile.stop - tile.start), []).append(tile)
    batches = [same[i : i + tiles_per_call] for same in calls.values() for i in range(0, len(same), tiles_per_call)]
    shared = SharedGroupNorms(module)

    @torch.no_grad()
    def work() -> Work[torch.Tensor]:
        x = source()
        assert x.shape[0] == 1 and x.shape[2] == frames, "one waveform at a time, of the planned length"
        shared.bins = x.shape[3]

        def run(batch: list[_Tile]) -> torch.Tensor:
            shared.tile = batch[0]  # the tiles of a batch share their geometry
            return stage(torch.cat([x[:, :, t.start - t.left : t.start - t.left + t.length] for t in batch]))

        run(batches[0][:1])  # learns the order the module runs its GroupNorms in
        for norm in list(shared.order):
            shared.measuring = norm
            for batch in batches:
                yield
                with suppress(_StopForward):
                    run(batch)
            shared.stats[norm].finalize()
        shared.measuring = None
        cores: dict[int, torch.Tensor] = {}
        for batch in batches:
            yield
            for tile, core in zip(batch, shared.core(run(batch)).split(1), strict=True):
                cores[tile.start] = core
        return torch.cat([cores[tile.start] for tile in plan], dim=2)

    return Pieces(within(shared.active, work()), 1 + (len(shared.norms) + 1) * len(batches))


def decode_tiled(
    vae: nn.Module, latents: torch.Tensor, tile_frames: int, halo: int = TILE_HALO
) -> Pieces[torch.Tensor]:
    """`vae.decode(latents).sample`, in tiles of `tile_frames` latent frames with shared GroupNorm statistics."""

    def stage(window: torch.Tensor) -> torch.Tensor:
        if getattr(vae, "post_quant_conv", None) is not None:
            window = vae.post_quant_conv(window)
        return vae.decoder(window)

    return tiled(stage, vae.decoder, lambda: latents, latents.shape[2], tile_frames, halo)


def encode_tiled(
    vae: nn.Module, mel: Callable[[], torch.Tensor], frames: int, tile_frames: int, halo: int = TILE_HALO
) -> Pieces[torch.Tensor]:
    """The mean of `vae.encode(mel()).latent_dist` for `frames` mel frames, in tiles of `tile_frames` latent frames
    (mel frames in, the encoder's downsampling times as many) with shared GroupNorm statistics. `mel` is made in
    the first piece (a long clip's spectrogram is itself some work)."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)  # each down block but the last halves time and bins

    def stage(window: torch.Tensor) -> torch.Tensor:
        moments = vae.encoder(window)
        if getattr(vae, "quant_conv", None) is not None:
            moments = vae.quant_conv(moments)
        return moments[:, : moments.shape[1] // 2]  # the mean half of the diagonal Gaussian's parameters

    return tiled(stage, vae.encoder, mel, frames, tile_frames * factor, halo * factor)


def vocoder_pieces(frames: int, chunk: int = VOCODER_CHUNK) -> int:
    """The pieces `vocode_chunked` runs for `frames` mel frames: one per chunk."""
    return math.ceil(frames / chunk)


def vocode_chunked(
    vocoder: nn.Module, mel: torch.Tensor, chunk: int = VOCODER_CHUNK, halo: int = VOCODER_HALO
) -> Pieces[torch.Tensor]:
    """The vocoder over (1, frames, mel bins) in chunks with context on both sides, trimmed and joined: (samples,).
    One chunk is one piece."""
    frames = mel.shape[1]

    @torch.no_grad()
    def work() -> Work[torch.Tensor]:
        parts = []
        for start in range(0, frames, chunk):
            if parts:
                yield
            stop = min(start + chunk, frames)
            left, right = min(halo, start), min(halo, frames - stop)
            audio = vocoder(mel[:, start - left : stop + right]).reshape(-1)
            per_frame = audio.shape[0] // (stop - start + left + right)
            parts.append(audio[left * per_frame : (left + stop - start) * per_frame].float().cpu())
        return torch.cat(parts)

    return Pieces(work(), vocoder_pieces(frames, chunk))
