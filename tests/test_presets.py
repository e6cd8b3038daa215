"""The GPU memory presets (deploy/presets/*.env): every line is a setting this service reads, the settings load,
and both runners' placements accept them on a CUDA machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.memory import place
from models.music_flamingo import BITSANDBYTES_ON_CPU
from runners.startup import audioldm2_memory, music_flamingo_memory
from settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "deploy" / "presets").glob("*.env"))


def entries(preset: Path) -> dict[str, str]:
    lines = [line.strip() for line in preset.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_there_is_a_preset_for_each_card_size() -> None:
    assert [p.stem for p in PRESETS] == ["gpu-12gb", "gpu-24gb", "gpu-6gb", "gpu-80gb"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_loads_and_both_runners_can_be_placed_with_it(preset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_source = (ROOT / "settings.py").read_text()
    for name, value in entries(preset).items():
        assert f'"{name}"' in settings_source, f"{preset.name}: {name} is not a setting"
        monkeypatch.setenv(name, value)
    settings = load_settings()
    audioldm2 = place("AudioLDM2", audioldm2_memory(settings), torch.float16, cuda=True)
    flamingo = place(
        "Music Flamingo",
        music_flamingo_memory(settings),
        torch.bfloat16,
        cuda=True,
        bitsandbytes_on_cpu=BITSANDBYTES_ON_CPU,
    )
    assert audioldm2.dtype == torch.float16 and flamingo.dtype == torch.bfloat16
