"""Audio files in and out of the service (libsndfile through `soundfile`, resampling with `soxr`).

Shared by every API that takes or returns audio: uploads are checked (size,
container, duration from the header) before the samples are decoded, then
down-mixed to mono and resampled to the model's rate.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from schemas import AudioFormat

MEDIA_TYPES = {AudioFormat.WAV: "audio/wav", AudioFormat.FLAC: "audio/flac"}
UPLOAD_CONTAINERS = ("WAV", "FLAC", "MP3", "OGG")
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


class AudioInputError(ValueError):
    """An uploaded file the service will not decode; `status` is the HTTP status to answer with."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # mono float32 at `sample_rate`
    sample_rate: int
    source_seconds: float  # length of the whole upload
    truncated: bool  # only the first `max_seconds` were decoded

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def encode_audio(samples: np.ndarray, sample_rate: int, audio_format: AudioFormat) -> bytes:
    """Mono float samples -> a 16-bit PCM file; values beyond full scale are clipped, not wrapped."""
    buffer = io.BytesIO()
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    soundfile.write(buffer, clipped, sample_rate, format=audio_format.value.upper(), subtype="PCM_16")
    return buffer.getvalue()


def probe_upload(path: Path, field: str) -> soundfile._SoundFileInfo:
    """Check an upload from its size and header alone: container, sample rate, length."""
    size = path.stat().st_size
    if size == 0:
        raise AudioInputError(field, "the uploaded file is empty")
    if size > MAX_UPLOAD_BYTES:
        raise AudioInputError(field, f"the file is {size} bytes; the limit is {MAX_UPLOAD_BYTES} bytes", status=413)
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioInputError(
            field, f"not a readable audio file (expected {', '.join(UPLOAD_CONTAINERS)}): {exc}", status=415
        ) from exc
    if info.format not in UPLOAD_CONTAINERS:
        raise AudioInputError(
            field, f"{info.format} files are not accepted; send {', '.join(UPLOAD_CONTAINERS)}", status=415
        )
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioInputError(field, "the file holds no audio samples")
    return info


def decode_upload(path: Path, field: str, sample_rate: int, max_seconds: float, *, truncate: bool) -> DecodedAudio:
    """Decode an uploaded WAV/FLAC/MP3/OGG file to mono float32 at `sample_rate`.

    Longer than `max_seconds`: with `truncate`, only the first `max_seconds`
    are decoded; otherwise the upload is refused before decoding.
    """
    info = probe_upload(path, field)
    if info.duration > max_seconds and not truncate:
        raise AudioInputError(field, f"the clip is {info.duration:.2f} s long; the limit is {max_seconds:g} s")
    frames = min(info.frames, int(max_seconds * info.samplerate))
    try:
        samples, rate = soundfile.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioInputError(field, f"the audio could not be decoded: {exc}") from exc
    if len(samples) == 0:
        raise AudioInputError(field, "the file holds no audio samples")
    mono = samples.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate)
    if not np.isfinite(mono).all():
        raise AudioInputError(field, "the audio contains non-finite samples (NaN/Inf)")
    return DecodedAudio(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        sample_rate=sample_rate,
        source_seconds=float(info.duration),
        truncated=info.frames > frames,
    )
