"""The GPU memory presets (deploy/presets/*.env): every line is a setting this service reads, the settings load,
and both runners' placements accept them on a CUDA machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.memory import MemoryOptions, place
from models.music_flamingo import BITSANDBYTES_ON_CPU
from registry import AUDIOLDM2, MUSIC_FLAMINGO, setting_names

ROOT = Path(__file__).resolve().parent.parent.parent
PRESETS = sorted((ROOT / "deploy" / "presets").glob("*.env"))


def entries(preset: Path) -> dict[str, str]:
    lines = [line.strip() for line in preset.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_there_is_a_preset_for_each_card_size() -> None:
    assert [p.stem for p in PRESETS] == ["gpu-12gb", "gpu-24gb", "gpu-6gb", "gpu-80gb"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_loads_and_both_runners_can_be_placed_with_it(preset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in entries(preset).items():
        assert name in setting_names(), f"{preset.name}: {name} is not a setting"
        monkeypatch.setenv(name, value)
    audioldm2 = place("AudioLDM2", MemoryOptions.of(AUDIOLDM2.read_settings()), torch.float16, cuda=True)
    flamingo = place(
        "Music Flamingo",
        MemoryOptions.of(MUSIC_FLAMINGO.read_settings()),
        torch.bfloat16,
        cuda=True,
        bitsandbytes_on_cpu=BITSANDBYTES_ON_CPU,
    )
    assert audioldm2.dtype == torch.float16 and flamingo.dtype == torch.bfloat16
