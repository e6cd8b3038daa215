"""Audio files in and out of the service (libsndfile through `soundfile`)."""

from __future__ import annotations

import io

import numpy as np
import soundfile

from schemas import AudioFormat

MEDIA_TYPES = {AudioFormat.WAV: "audio/wav", AudioFormat.FLAC: "audio/flac"}


def encode_audio(samples: np.ndarray, sample_rate: int, audio_format: AudioFormat) -> bytes:
    """Mono float samples -> a 16-bit PCM file; values beyond full scale are clipped, not wrapped."""
    buffer = io.BytesIO()
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    soundfile.write(buffer, clipped, sample_rate, format=audio_format.value.upper(), subtype="PCM_16")
    return buffer.getvalue()
