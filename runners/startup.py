"""What every runner does the same way: its service configuration and the start-up line naming its weights."""

from __future__ import annotations

import logging
from typing import Any

from models.memory import MemoryOptions, Placement
from models.profiles import Checkpoint
from settings import REQUEST_TIMEOUT_S, SETTINGS, Profile, Settings
from telemetry import tracing_config

logger = logging.getLogger("bentoml.audio_studio")

# One worker, one thread: one batch at a time owns the model (and the GPU). Traced like the front.
RUNNER_CONFIG: dict[str, Any] = {
    "workers": 1,
    "threads": 1,
    "traffic": {"timeout": REQUEST_TIMEOUT_S},
    **tracing_config(SETTINGS),
}


def log_model_choice(runner: str, checkpoint: Checkpoint, placement: Placement) -> None:
    """The start-up line that says which profile runs and how it is placed; random weights are never silent."""
    logger.info(
        "%s runner: profile=%s model=%s %s%s",
        runner,
        checkpoint.profile.value,
        checkpoint.model_id,
        placement.describe(),
        " (RANDOM WEIGHTS: for tests and demos only)" if checkpoint.profile is Profile.TINY else "",
    )


def audioldm2_memory(settings: Settings) -> MemoryOptions:
    return MemoryOptions(
        dtype=settings.audioldm2_dtype,
        offload=settings.audioldm2_offload,  # type: ignore[arg-type]  # checked by settings
        attention_slicing=settings.audioldm2_attention_slicing,
        quantization=settings.audioldm2_quantization,  # type: ignore[arg-type]
    )


def music_flamingo_memory(settings: Settings) -> MemoryOptions:
    return MemoryOptions(
        dtype=settings.music_flamingo_dtype,
        attention=settings.music_flamingo_attention,  # type: ignore[arg-type]  # checked by settings
        quantization=settings.music_flamingo_quantization,  # type: ignore[arg-type]
        decoding=settings.music_flamingo_decoding,  # type: ignore[arg-type]
        gpu_memory_gib=settings.music_flamingo_gpu_memory_gib,
    )
