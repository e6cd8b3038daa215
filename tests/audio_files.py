"""Real audio files for upload tests, written by libsndfile in each accepted container."""

from __future__ import annotations

import io

import numpy as np
import soundfile

# container -> (soundfile format, subtype)
CONTAINERS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
}
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}


def stereo_tone(seconds: float, rate: int = 44_100, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * hz * t)
    right = 0.3 * np.sin(2 * np.pi * 1.5 * hz * t)
    return np.stack([left, right], axis=1).astype(np.float32)


def audio_file(container: str, seconds: float, rate: int = 44_100, hz: float = 220.0) -> bytes:
    fmt, subtype = CONTAINERS[container]
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo_tone(seconds, rate, hz), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def spectral_distance(reference: np.ndarray, other: np.ndarray, n_fft: int = 512, hop: int = 128) -> float:
    """Relative L2 distance of STFT magnitudes (Hann window): ||S(other)| - |S(reference)|| / ||S(reference)||.
    0 for the same audio; about 1.4 for two unrelated clips of the same loudness. Magnitudes ignore the phase a
    lossy codec does not keep, and a delay or a dropped frame shows as a large distance."""

    def magnitudes(samples: np.ndarray) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(np.asarray(samples, dtype=np.float64), n_fft)[::hop]
        return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))

    reference_mag = magnitudes(reference)
    return float(np.linalg.norm(magnitudes(other) - reference_mag) / np.linalg.norm(reference_mag))
