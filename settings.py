"""Every environment variable the service reads, in one place.

Read once at import: BentoML builds the service classes (and their batching
configuration) at import time, so a change needs a restart, as for any server.
The README's configuration table mirrors this module.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path


class Profile(str, enum.Enum):
    """Which weights the runners load."""

    FULL = "full"  # the published checkpoints (what users run)
    TINY = "tiny"  # random-weight models of the same classes, built locally (tests, CI, offline demos)


AUDIOLDM2_CHECKPOINTS = ("cvssp/audioldm2", "cvssp/audioldm2-large", "cvssp/audioldm2-music")
MUSIC_FLAMINGO_CHECKPOINTS = (
    "nvidia/music-flamingo-hf",
    "nvidia/music-flamingo-2601-hf",
    "nvidia/music-flamingo-think-2601-hf",
)


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r}: expected true/false")


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name)
    value = default if raw is None or raw == "" else int(raw)
    if not low <= value <= high:
        raise ValueError(f"{name}={value}: must be between {low} and {high}")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class Settings:
    profile: Profile
    audioldm2_checkpoint: str
    tiny_model_dir: Path
    batching: bool
    cpu_offload: bool
    vae_slicing: bool
    audioldm2_max_batch_size: int
    audioldm2_max_latency_ms: int
    music_flamingo_checkpoint: str
    audioldm2_url: str | None
    music_flamingo_url: str | None
    music_flamingo_max_batch_size: int
    music_flamingo_max_latency_ms: int
    shutdown_grace_s: int


def load_settings() -> Settings:
    profile = Profile(_choice("AUDIO_STUDIO_PROFILE", Profile.FULL.value, tuple(p.value for p in Profile)))
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Settings(
        profile=profile,
        audioldm2_checkpoint=_choice(
            "AUDIO_STUDIO_AUDIOLDM2_CHECKPOINT", AUDIOLDM2_CHECKPOINTS[0], AUDIOLDM2_CHECKPOINTS
        ),
        tiny_model_dir=Path(
            os.environ.get("AUDIO_STUDIO_TINY_MODEL_DIR") or cache_home / "audio-studio" / "tiny-models"
        ),
        batching=_bool("AUDIO_STUDIO_BATCHING", True),
        cpu_offload=_bool("AUDIO_STUDIO_CPU_OFFLOAD", False),
        vae_slicing=_bool("AUDIO_STUDIO_VAE_SLICING", False),
        audioldm2_max_batch_size=_int("AUDIO_STUDIO_AUDIOLDM2_MAX_BATCH_SIZE", 8, 2, 64),
        audioldm2_max_latency_ms=_int("AUDIO_STUDIO_AUDIOLDM2_MAX_LATENCY_MS", 600_000, 1_000, 3_600_000),
        music_flamingo_checkpoint=_choice(
            "AUDIO_STUDIO_MUSIC_FLAMINGO_CHECKPOINT", MUSIC_FLAMINGO_CHECKPOINTS[0], MUSIC_FLAMINGO_CHECKPOINTS
        ),
        audioldm2_url=os.environ.get("AUDIO_STUDIO_AUDIOLDM2_URL") or None,
        music_flamingo_url=os.environ.get("AUDIO_STUDIO_MUSIC_FLAMINGO_URL") or None,
        music_flamingo_max_batch_size=_int("AUDIO_STUDIO_MUSIC_FLAMINGO_MAX_BATCH_SIZE", 8, 2, 64),
        music_flamingo_max_latency_ms=_int("AUDIO_STUDIO_MUSIC_FLAMINGO_MAX_LATENCY_MS", 600_000, 1_000, 3_600_000),
        # After SIGTERM, requests in flight get this long before they are ended with 503 (Kubernetes waits 30 s).
        shutdown_grace_s=_int("AUDIO_STUDIO_SHUTDOWN_GRACE_S", 20, 0, 3600),
    )


SETTINGS = load_settings()
