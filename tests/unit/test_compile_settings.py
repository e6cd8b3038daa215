"""AUDIO_STUDIO_AUDIOLDM2_COMPILE: the row buckets a compiled UNet runs, the rows a pass is padded to, and the
placements it is refused with at start-up (tests/test_compiled_unet.py compiles)."""

from __future__ import annotations

import pytest
import torch

from models.audioldm2 import AudioLDM2Engine
from models.compiled_unet import check_compile, row_buckets
from models.memory import MemoryOptions, Placement, UnsupportedMemoryOption


def test_row_buckets_double_from_the_row_multiple_until_one_holds_the_most_rows() -> None:
    assert row_buckets(4, 32) == (4, 8, 16, 32)
    assert row_buckets(1, 32) == (1, 2, 4, 8, 16, 32)
    assert row_buckets(4, 20) == (4, 8, 16, 32)


def test_a_compiled_engine_pads_a_pass_to_its_bucket_and_an_eager_one_to_the_row_multiple(
    engine: AudioLDM2Engine,
) -> None:
    compiled = AudioLDM2Engine(engine.pipe, max_rows=32, compile="default", compile_backend="eager")
    assert [compiled.unet_rows(rows) for rows in (1, 4, 5, 9, 17, 32)] == [4, 4, 8, 16, 32, 32]
    assert [engine.unet_rows(rows) for rows in (1, 4, 5, 9, 17)] == [4, 4, 8, 12, 20]


@pytest.mark.parametrize(
    ("mode", "device", "options", "named"),
    [
        ("reduce-overhead", "cpu", MemoryOptions(), "CUDA"),
        ("default", "cuda", MemoryOptions(offload="model"), "offload=model"),
        ("default", "cuda", MemoryOptions(quantization="nf4"), "nf4"),
    ],
)
def test_what_cannot_compile_is_refused_with_the_reason(
    mode: str, device: str, options: MemoryOptions, named: str
) -> None:
    with pytest.raises(UnsupportedMemoryOption, match=named):
        check_compile(mode, Placement(torch.device(device), torch.float16, options))  # type: ignore[arg-type]


def test_what_compiles_is_let_through() -> None:
    check_compile("default", Placement(torch.device("cpu"), torch.float32, MemoryOptions(quantization="int8")))
    check_compile("reduce-overhead", Placement(torch.device("cuda"), torch.float16, MemoryOptions()))
    check_compile("none", Placement(torch.device("cpu"), torch.float32, MemoryOptions(offload="model")))
