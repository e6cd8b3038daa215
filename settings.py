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


# The time budget of a request (README, "Time budget"): every service answers within REQUEST_TIMEOUT_S, and a
# runner's batcher gives up on a job that has not started within its max latency, at most MAX_QUEUE_WAIT_MS.
REQUEST_TIMEOUT_S = 900
MAX_QUEUE_WAIT_MS = 840_000


DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")  # auto: the GPU's half type on CUDA, else float32
QUANTIZATIONS = ("none", "int8", "bnb-int8", "nf4")  # int8: torchao; bnb-int8, nf4: bitsandbytes (models/memory.py)


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


def _float(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    value = default if raw is None or raw == "" else float(raw)
    if not low <= value <= high:  # NaN fails this too
        raise ValueError(f"{name}={value}: must be between {low:g} and {high:g}")
    return value


def _list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(choices)}")
    return value


def _job_store(value: str) -> str:
    if value != "sqlite" and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"AUDIO_STUDIO_JOB_STORE={value!r}: must be sqlite or a redis://, rediss:// or unix:// URL")
    return value


@dataclass(frozen=True)
class Settings:
    profile: Profile
    audioldm2_checkpoint: str
    tiny_model_dir: Path
    batching: bool
    audioldm2_dtype: str
    audioldm2_offload: str
    audioldm2_attention_slicing: bool
    audioldm2_quantization: str
    music_flamingo_dtype: str
    music_flamingo_attention: str
    music_flamingo_quantization: str
    music_flamingo_decoding: str
    music_flamingo_gpu_memory_gib: float
    audioldm2_max_batch_size: int
    audioldm2_max_latency_ms: int
    music_flamingo_checkpoint: str
    audioldm2_url: str | None
    music_flamingo_url: str | None
    music_flamingo_max_batch_size: int
    music_flamingo_max_latency_ms: int
    shutdown_grace_s: int
    max_audio_seconds: int
    model_threads: int
    api_keys_file: Path | None
    metrics_need_key: bool
    docs_need_key: bool
    ui_need_key: bool
    cors_origins: tuple[str, ...]
    key_max_in_flight: int
    key_rate_per_minute: int
    key_burst: int
    audioldm2_max_queued: int
    music_flamingo_max_queued: int
    otlp_endpoint: str | None
    trace_sample_rate: float
    job_store: str
    job_data_dir: Path
    job_retention_s: int
    jobs_max_active: int
    jobs_max_active_per_key: int
    job_inline_result_bytes: int
    playground: bool
    critique_segment_seconds: float
    critique_segment_overlap_seconds: float


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
        # Memory and speed per runner (models/memory.py checks each against the machine at start-up).
        audioldm2_dtype=_choice("AUDIO_STUDIO_AUDIOLDM2_DTYPE", "auto", DTYPE_CHOICES),
        audioldm2_offload=_choice("AUDIO_STUDIO_AUDIOLDM2_OFFLOAD", "none", ("none", "model", "sequential")),
        audioldm2_attention_slicing=_bool("AUDIO_STUDIO_AUDIOLDM2_ATTENTION_SLICING", False),
        audioldm2_quantization=_choice("AUDIO_STUDIO_AUDIOLDM2_QUANTIZATION", "none", QUANTIZATIONS),
        music_flamingo_dtype=_choice("AUDIO_STUDIO_MUSIC_FLAMINGO_DTYPE", "auto", DTYPE_CHOICES),
        music_flamingo_attention=_choice(
            "AUDIO_STUDIO_MUSIC_FLAMINGO_ATTENTION", "sdpa", ("sdpa", "eager", "flash_attention_2")
        ),
        music_flamingo_quantization=_choice("AUDIO_STUDIO_MUSIC_FLAMINGO_QUANTIZATION", "none", QUANTIZATIONS),
        music_flamingo_gpu_memory_gib=_float("AUDIO_STUDIO_MUSIC_FLAMINGO_GPU_MEMORY_GIB", 0.0, 0.0, 4096.0),
        music_flamingo_decoding=_choice(
            "AUDIO_STUDIO_MUSIC_FLAMINGO_DECODING", "dynamic", ("dynamic", "static", "compiled")
        ),
        audioldm2_max_batch_size=_int("AUDIO_STUDIO_AUDIOLDM2_MAX_BATCH_SIZE", 8, 2, 64),
        # A job not started by then gets 503; the bound leaves the batch time inside the 900 s request timeout.
        audioldm2_max_latency_ms=_int("AUDIO_STUDIO_AUDIOLDM2_MAX_LATENCY_MS", 600_000, 1_000, MAX_QUEUE_WAIT_MS),
        music_flamingo_checkpoint=_choice(
            "AUDIO_STUDIO_MUSIC_FLAMINGO_CHECKPOINT", MUSIC_FLAMINGO_CHECKPOINTS[0], MUSIC_FLAMINGO_CHECKPOINTS
        ),
        audioldm2_url=os.environ.get("AUDIO_STUDIO_AUDIOLDM2_URL") or None,
        music_flamingo_url=os.environ.get("AUDIO_STUDIO_MUSIC_FLAMINGO_URL") or None,
        music_flamingo_max_batch_size=_int("AUDIO_STUDIO_MUSIC_FLAMINGO_MAX_BATCH_SIZE", 8, 2, 64),
        music_flamingo_max_latency_ms=_int(
            "AUDIO_STUDIO_MUSIC_FLAMINGO_MAX_LATENCY_MS", 600_000, 1_000, MAX_QUEUE_WAIT_MS
        ),
        # After SIGTERM, requests in flight get this long before they are ended with 503 (Kubernetes waits 30 s).
        shutdown_grace_s=_int("AUDIO_STUDIO_SHUTDOWN_GRACE_S", 20, 0, 3600),
        # Longest audio /generate makes and /transform takes, in seconds (long-form: windows of ~10 s).
        max_audio_seconds=_int("AUDIO_STUDIO_MAX_AUDIO_SECONDS", 600, 30, 3600),
        # CPU threads of each runner's model thread (0: torch's default, one per core).
        model_threads=_int("AUDIO_STUDIO_MODEL_THREADS", 0, 0, 1024),
        # Access: API keys (off unless a keys file is named) and what else they guard.
        api_keys_file=Path(os.environ["AUDIO_STUDIO_API_KEYS_FILE"])
        if os.environ.get("AUDIO_STUDIO_API_KEYS_FILE")
        else None,
        metrics_need_key=_bool("AUDIO_STUDIO_METRICS_NEED_KEY", True),
        docs_need_key=_bool("AUDIO_STUDIO_DOCS_NEED_KEY", False),
        ui_need_key=_bool("AUDIO_STUDIO_UI_NEED_KEY", False),
        cors_origins=_list("AUDIO_STUDIO_CORS_ORIGINS"),
        # Per-key quotas (with keys on): requests in flight, and a token bucket of requests per minute.
        key_max_in_flight=_int("AUDIO_STUDIO_KEY_MAX_IN_FLIGHT", 8, 1, 10_000),
        key_rate_per_minute=_int("AUDIO_STUDIO_KEY_RATE_PER_MINUTE", 60, 1, 1_000_000),
        key_burst=_int("AUDIO_STUDIO_KEY_BURST", 20, 1, 100_000),
        # Per runner: requests the front lets wait beyond one full batch before it answers 503 at once.
        audioldm2_max_queued=_int("AUDIO_STUDIO_AUDIOLDM2_MAX_QUEUED", 32, 0, 100_000),
        music_flamingo_max_queued=_int("AUDIO_STUDIO_MUSIC_FLAMINGO_MAX_QUEUED", 32, 0, 100_000),
        # Tracing: OTLP/HTTP to this endpoint (e.g. http://otel-collector:4318/v1/traces); off when unset.
        otlp_endpoint=os.environ.get("AUDIO_STUDIO_OTLP_ENDPOINT") or None,
        trace_sample_rate=_float("AUDIO_STUDIO_TRACE_SAMPLE_RATE", 1.0, 0.0, 1.0),
        # Jobs: `sqlite` (a file in the data folder, one front process) or a redis:// URL (several replicas).
        job_store=_job_store(os.environ.get("AUDIO_STUDIO_JOB_STORE") or "sqlite"),
        job_data_dir=Path(
            os.environ.get("AUDIO_STUDIO_JOB_DATA_DIR") or Path.home() / ".local" / "share" / "audio-studio" / "jobs"
        ),
        job_retention_s=_int("AUDIO_STUDIO_JOB_RETENTION_S", 86_400, 1, 90 * 86_400),
        jobs_max_active=_int("AUDIO_STUDIO_JOBS_MAX_ACTIVE", 256, 1, 1_000_000),
        jobs_max_active_per_key=_int("AUDIO_STUDIO_JOBS_MAX_ACTIVE_PER_KEY", 32, 1, 1_000_000),
        # With Redis: results up to this size live in Redis, larger ones in the data folder (a shared volume).
        job_inline_result_bytes=_int("AUDIO_STUDIO_JOB_INLINE_RESULT_BYTES", 8 << 20, 0, 512 << 20),
        # The playground page at /ui (front/playground/); it uses the public API only.
        playground=_bool("AUDIO_STUDIO_PLAYGROUND", True),
        # long_audio=segments: segment length (0: the checkpoint's per-clip limit) and the overlap of neighbours.
        critique_segment_seconds=_float("AUDIO_STUDIO_CRITIQUE_SEGMENT_SECONDS", 0.0, 0.0, 1200.0),
        critique_segment_overlap_seconds=_float("AUDIO_STUDIO_CRITIQUE_SEGMENT_OVERLAP_SECONDS", 10.0, 0.0, 300.0),
    )


SETTINGS = load_settings()
