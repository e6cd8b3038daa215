"""What every runner does the same way: its service configuration and the start-up line naming its weights."""

from __future__ import annotations

import logging
from typing import Any

from models.memory import Placement
from models.profiles import Checkpoint
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
        " (RANDOM WEIGHTS: for tests and demos only)" if checkpoint.profile is Profile.TINY else "",
    )
