"""What every runner does the same way: its service configuration, its model's placement and thread, and the
start-up line naming its weights."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from models.allocator import keep_freed_memory
from models.memory import MemoryOptions, Placement, place
from models.profiles import Checkpoint
from registry import Family
from runners.model_thread import ModelThread
from settings import REQUEST_TIMEOUT_S, SETTINGS, Profile
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
        "" if checkpoint.profile is Profile.FULL else " (RANDOM WEIGHTS: for tests, demos and benchmarks only)",
    )


def prepare_model(
    family: Family, checkpoint: Checkpoint, gpu_dtype: torch.dtype, bitsandbytes_on_cpu: tuple[str, ...] = ()
) -> tuple[Placement, ModelThread]:
    """Before a runner loads its model: the placement its settings ask for (refused with the reason when this
    machine cannot have it), the start-up line, freed memory kept for reuse (models/allocator.py), and the
    thread that will own the model."""
    placement = place(
        family.title, MemoryOptions.of(family.settings), gpu_dtype, bitsandbytes_on_cpu=bitsandbytes_on_cpu
    )
    log_model_choice(family.title, checkpoint, placement)
    keep_freed_memory()
    return placement, ModelThread(f"{family.name}-model", SETTINGS.model_threads)


def use_compile_cache(folder: Path) -> None:
    """Compiled kernels are written to and read from `folder` (TORCHINDUCTOR_CACHE_DIR, Triton's cache inside it;
    inductor reads the variable at each use), so a restarted runner loads them instead of compiling again."""
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
