"""Every environment variable the service reads, in one place.

Read once at import: BentoML builds the service classes (and their batching
configuration) at import time, so a change needs a restart, as for any server.
Service-wide settings are the fields of `Settings`; each runner's are read by prefix
(`AUDIO_STUDIO_<RUNNER>_*`) into its kind's `RunnerSettings` class, named in registry.py.
docs/configuration.md is generated from these classes (`python -m registry`).
"""

from __future__ import annotations

import enum
import os
import types
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_type_hints

T = TypeVar("T", bound="Checked")


class Profile(str, enum.Enum):
    """Which weights the runners load."""

    FULL = "full"  # the published checkpoints (what users run)
    TINY = "tiny"  # random-weight models of the same classes, built locally (tests, CI, offline demos)
    RANDOM = "random"  # random-weight models written to a folder beforehand (full-size benchmarks: bench/gpu.sh)


# The time budget of a request (docs/security.md, "Time budget"): every service answers within REQUEST_TIMEOUT_S, and a
# runner's batcher gives up on a job that has not started within its max latency, at most MAX_QUEUE_WAIT_MS.
REQUEST_TIMEOUT_S = 900
MAX_QUEUE_WAIT_MS = 840_000


# How a runner's model is placed (models/memory.py checks each against the machine at start-up).
DType = Literal["auto", "float32", "float16", "bfloat16"]  # auto: the GPU's half type on CUDA, else float32
Offload = Literal["none", "model", "sequential"]
Attention = Literal["sdpa", "eager", "flash_attention_2"]
Quantization = Literal["none", "int8", "bnb-int8", "nf4"]  # int8: torchao; bnb-int8, nf4: bitsandbytes
Decoding = Literal["auto", "dynamic", "static", "compiled"]  # Music Flamingo's KV cache; auto: compiled on CUDA
UNetCompile = Literal["none", "default", "reduce-overhead", "max-autotune"]  # torch.compile's modes for AudioLDM2


def knob(default: Any, doc: str, *, low: float | None = None, high: float | None = None, shown: str = "") -> Any:
    """A setting's field: its default (a callable for one computed at start-up), range and description.

    `shown`: how docs/configuration.md writes a computed default.
    """
    computed = callable(default) and not isinstance(default, type)
    meta = {"doc": doc, "low": low, "high": high, "shown": shown}
    return field(default_factory=default, metadata=meta) if computed else field(default=default, metadata=meta)


def _parse(name: str, raw: str, kind: Any, meta: dict[str, Any]) -> Any:
    """`raw` (the environment's text) as the field's type, within its range or choices."""
    choices = get_args(kind) if getattr(kind, "__origin__", None) is Literal else ()
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}={raw!r}: expected true/false")
    if kind in (int, float):
        value = kind(raw)
        low, high = meta["low"], meta["high"]
        if not low <= value <= high:  # NaN fails this too
            raise ValueError(f"{name}={value}: must be between {_number(low)} and {_number(high)}")
        return value
    if choices:
        if raw not in choices:
            raise ValueError(f"{name}={raw!r}: must be one of {', '.join(choices)}")
        return raw
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(_parse(name, raw, Literal[tuple(m.value for m in kind)], meta))
    if kind == tuple[str, ...]:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if kind is Path:
        return Path(raw)
    return raw


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _value_type(kind: Any) -> Any:
    """`X | None` -> X: an unset or empty variable gives the default (None)."""
    if isinstance(kind, types.UnionType):
        (inner,) = [arg for arg in get_args(kind) if arg is not type(None)]
        return inner
    return kind


def read_fields(cls: type[T], prefix: str, environ: dict[str, str] | None = None, **defaults: Any) -> T:
    """An instance of the settings class `cls`: each field from `<prefix><FIELD>`, else `defaults`, else its own."""
    environ = dict(os.environ) if environ is None else environ
    hints = get_type_hints(cls)
    values = dict(defaults)
    for spec in fields(cls):  # type: ignore[arg-type]
        name = prefix + spec.name.upper()
        raw = environ.get(name, "")
        if raw != "":
            values[spec.name] = _parse(name, raw, _value_type(hints[spec.name]), dict(spec.metadata))
    instance = cls(**values)
    instance.check()
    return instance


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


class Checked:
    """A settings class that checks its values beyond each field's type and range."""

    def check(self) -> None:
        return None


@dataclass(frozen=True)
class Settings(Checked):
    """The service-wide settings: `AUDIO_STUDIO_<FIELD>`."""

    profile: Profile = knob(
        Profile.FULL,
        "Which weights the runners load: `full` (the published checkpoints), "
        "`tiny` (random-weight models of the same classes, built locally; tests and demos) or `random` "
        "(random-weight models read from `AUDIO_STUDIO_RANDOM_MODEL_DIR`; full-size benchmarks).",
    )
    tiny_model_dir: Path = knob(
        lambda: _cache_home() / "audio-studio" / "tiny-models",
        "Where the tiny profile's models are built.",
        shown="~/.cache/audio-studio/tiny-models",
    )
    random_model_dir: Path = knob(
        lambda: _cache_home() / "audio-studio" / "random-models",
        "Profile `random`: one model folder per checkpoint, under the checkpoint's name (`<dir>/cvssp/audioldm2`), "
        "written beforehand by `bench/fullsize.py --write-random` (full size) or `--write-random --smoke` (tiny).",
        shown="~/.cache/audio-studio/random-models",
    )
    batching: bool = knob(True, "Adaptive batching on the runners (off: every request is its own batch).")
    shutdown_grace_s: int = knob(
        20,
        "After SIGTERM, requests and jobs in flight get this long before they are stopped (requests answered 503, "
        "jobs left to the next start (SQLite) or failed as interrupted (Redis), runners told); keep it under the "
        "pod's termination grace (Kubernetes: 30 s).",
        low=0,
        high=3600,
    )
    max_audio_seconds: int = knob(
        600,
        "Longest audio /generate makes and /transform takes, in seconds (long-form: windows of ~10 s).",
        low=30,
        high=3600,
    )
    model_threads: int = knob(
        0,
        "CPU threads of each runner's model thread (0: torch's default, one per core). AudioLDM2's batch invariance"
        " on a CPU holds bit for bit at 2 and 4, not at 1, 3 or 8 (docs/architecture.md).",
        low=0,
        high=1024,
    )
    compile_cache_dir: Path = knob(
        lambda: _cache_home() / "audio-studio" / "compile",
        "Compiled models' kernels (TORCHINDUCTOR_CACHE_DIR): kept across restarts, a volume in Kubernetes.",
        shown="~/.cache/audio-studio/compile",
    )
    api_keys_file: Path | None = knob(None, "API keys (sha256 digests, one per line); keys are off unless it is set.")
    metrics_need_key: bool = knob(True, "With keys on: /metrics needs a key.")
    docs_need_key: bool = knob(False, "With keys on: / and /docs.json need a key.")
    ui_need_key: bool = knob(False, "With keys on: the playground page needs a key.")
    cors_origins: tuple[str, ...] = knob((), "Comma-separated origins allowed cross-origin (CORS is off when empty).")
    key_max_in_flight: int = knob(
        8,
        "Per API key: requests in flight (synchronous requests and job submissions being answered); counted over "
        "every replica when the job store is Redis.",
        low=1,
        high=10_000,
    )
    key_rate_per_minute: int = knob(
        60,
        "Per API key: requests per minute (a token bucket; job submissions count); over every replica with Redis.",
        low=1,
        high=1_000_000,
    )
    key_burst: int = knob(20, "Per API key: the token bucket's size.", low=1, high=100_000)
    body_timeout_s: float = knob(
        20.0,
        "A request body must have arrived within this many seconds plus one second per "
        "`AUDIO_STUDIO_BODY_MIN_RATE_KIB_S` KiB received; a slower one is dropped (408 `request_timeout`).",
        low=1.0,
        high=3600.0,
    )
    body_min_rate_kib_s: float = knob(
        32.0,
        "The slowest upload kept, on average, in KiB/s: each that many KiB received give the body one more second.",
        low=0.1,
        high=1_000_000.0,
    )
    otlp_endpoint: str | None = knob(
        None, "Tracing: OTLP/HTTP to this endpoint (e.g. http://otel-collector:4318/v1/traces); off when unset."
    )
    trace_sample_rate: float = knob(1.0, "Tracing: the share of requests traced.", low=0.0, high=1.0)
    job_store: str = knob(
        "sqlite",
        "Jobs: `sqlite` (a file in the data folder, one front process) or a redis://, "
        "rediss:// or unix:// URL (several replicas).",
    )
    job_data_dir: Path = knob(
        lambda: Path.home() / ".local" / "share" / "audio-studio" / "jobs",
        "Jobs: the SQLite file and result files (a shared volume with Redis).",
        shown="~/.local/share/audio-studio/jobs",
    )
    job_retention_s: int = knob(86_400, "Jobs: how long a result is kept after the job ends.", low=1, high=90 * 86_400)
    job_stale_s: float = knob(
        30.0,
        "Jobs: an active job (or webhook delivery) whose process has not refreshed it for this long belongs to a "
        "process that died: it is taken over (by another replica with Redis, at start-up with SQLite).",
        low=10.0,
        high=3600.0,
    )
    job_max_attempts: int = knob(
        3,
        "Jobs: runs of one job at most. A job stopped by a restart of the service (a crash, a deploy) runs again "
        "from its accepted request when the service is back; after this many runs it fails for good.",
        low=1,
        high=100,
    )
    webhook_allowed_hosts: tuple[str, ...] = knob(
        (),
        "Jobs' webhooks: comma-separated hosts they may be sent to (`hooks.example.com`, `*.example.com` for its "
        "subdomains, `*` for any public host); loopback, link-local and private addresses only when listed by "
        "themselves. Webhooks are off when empty.",
    )
    webhook_secrets_file: Path | None = knob(
        None,
        "Jobs' webhooks: the signing secrets, one `<API key name> whsec_<base64>` per line, `*` for every caller "
        "without one (docs/webhooks.md). A job's webhook is refused without a secret for its caller.",
    )
    webhook_retry_s: float = knob(
        3600.0,
        "Jobs' webhooks: how long an event is retried (backoff from 1 s, doubling, at most 5 min) before it is "
        "given up.",
        low=1.0,
        high=7 * 86_400.0,
    )
    jobs_max_active: int = knob(256, "Jobs: queued or running at once, in all.", low=1, high=1_000_000)
    jobs_max_active_per_key: int = knob(32, "Jobs: queued or running at once, per API key.", low=1, high=1_000_000)
    jobs_max_input_mib: int = knob(
        512,
        "Jobs: MiB of decoded uploads (transform and critique audio, reference included) that queued or running "
        "jobs hold in the front, in all; a job that would pass it gets 429 (a job alone always fits).",
        low=1,
        high=1 << 20,
    )
    job_inline_result_bytes: int = knob(
        8 << 20,
        "Jobs with Redis: results up to this size live in Redis, larger ones in the data folder.",
        low=0,
        high=512 << 20,
    )
    playground: bool = knob(True, "The playground page at /ui (it uses the public API only).")
    critique_segment_seconds: float = knob(
        0.0, "long_audio=segments: segment length (0: the checkpoint's per-clip limit).", low=0.0, high=1200.0
    )
    critique_segment_overlap_seconds: float = knob(
        10.0, "long_audio=segments: the overlap of neighbouring segments.", low=0.0, high=300.0
    )

    def check(self) -> None:
        if self.job_store != "sqlite" and not self.job_store.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"AUDIO_STUDIO_JOB_STORE={self.job_store!r}: must be sqlite or a redis://, rediss:// or unix:// URL"
            )


@dataclass(frozen=True)
class RunnerSettings(Checked):
    """What every runner has: `AUDIO_STUDIO_<RUNNER>_<FIELD>` (registry.py names the runners)."""

    checkpoint: str = knob("", "The published checkpoint to serve (one of the family's; the first by default).")
    url: str | None = knob(
        None,
        "The runner's own process or pod (`bentoml.depends(url=...)`); unset: the front "
        "starts it in the same `bentoml serve`.",
    )
    max_batch_size: int = knob(8, "Jobs in one batch; also the front's job slots for the runner.", low=2, high=64)
    max_latency_ms: int = knob(
        600_000,
        "A job not started by then gets 503; the bound leaves the batch time inside the 900 s request timeout.",
        low=1_000,
        high=MAX_QUEUE_WAIT_MS,
    )
    enabled: bool | None = knob(
        None,
        "Run this runner. Unset: the service's own families always; an optional "
        "family (AudioLDM v1) only with the tiny profile.",
    )
    max_queued: int = knob(
        32, "Requests the front lets wait beyond one full batch before it answers 503 at once.", low=0, high=100_000
    )
    dtype: DType = knob("auto", "Weights' dtype: auto is the GPU's half type on CUDA, float32 on a CPU.")
    quantization: Quantization = knob("none", "Weight quantization: int8 (torchao), bnb-int8 or nf4 (bitsandbytes).")


@dataclass(frozen=True)
class DiffusionSettings(RunnerSettings):
    """The AudioLDM families' runners (diffusers pipelines)."""

    offload: Offload = knob("none", "Offload to CPU memory: model (whole components) or sequential (layers).")
    attention_slicing: bool = knob(False, "Attention in slices: less memory, slower.")


@dataclass(frozen=True)
class AudioLDM2Settings(DiffusionSettings):
    """The AudioLDM2 runner."""

    compile: UNetCompile = knob(
        "none",
        "torch.compile the UNet at start-up for every pass shape (no request waits for it): default, "
        "reduce-overhead (CUDA graphs; CUDA) or max-autotune; none runs it eagerly.",
    )


@dataclass(frozen=True)
class MusicFlamingoSettings(RunnerSettings):
    """The Music Flamingo runner (a transformers language model)."""

    attention: Attention = knob("sdpa", "The language model's attention kernel.")
    decoding: Decoding = knob(
        "auto",
        "The KV cache: dynamic (grown per token), static (preallocated) or compiled (static, the decoding step "
        "compiled at start-up; CUDA graphs on CUDA); auto: compiled on a CUDA GPU where the weights allow it "
        "(whole on the GPU, not bitsandbytes), else dynamic.",
    )
    gpu_memory_gib: float = knob(
        0.0, "> 0: at most this much of the weights on the GPU, the rest in CPU memory.", low=0.0, high=4096.0
    )


def default_text(spec: Field[Any]) -> str:
    if spec.metadata.get("shown"):
        return spec.metadata["shown"]
    value = spec.default if spec.default is not MISSING else None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, tuple):
        value = ",".join(value)
    return "unset" if value in (None, "") else str(value).lower() if isinstance(value, bool) else str(value)


def allowed_text(spec: Field[Any], kind: Any) -> str:
    kind = _value_type(kind)
    if getattr(kind, "__origin__", None) is Literal:
        return ", ".join(get_args(kind))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return ", ".join(m.value for m in kind)
    if kind is bool:
        return "true, false"
    if spec.metadata.get("low") is not None:
        return f"{_number(spec.metadata['low'])} to {_number(spec.metadata['high'])}"
    return ""


def load_settings() -> Settings:
    return read_fields(Settings, "AUDIO_STUDIO_")


SETTINGS = load_settings()
