"""Output files (audio_io.encode_audio): every format decodes back to the same length and rate, and the lossy ones
stay spectrally close to the WAV; `compression` is honoured at both of its bounds and refused with wav."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile
from pydantic import ValidationError

from audio_io import encode_audio
from schemas import AudioFormat, GenerateRequest
from tests.audio_files import spectral_distance

RATE = 16_000
# What the lossy codecs may change, as STFT magnitude relative L2 against the 16-bit WAV (0 = identical, ~1.4 =
# unrelated audio). Measured on this clip: mp3 0.04 / 0.06 / 0.11 at compression 0 / default / 1, opus 0.007 /
# 0.08 / 0.34 (6 kbps). The bounds leave room for encoder versions; 0.5 at 1 still fails a delayed, truncated
# or wrong-rate file, which scores near 1.
CLOSE = 0.15
CLOSE_AT_MOST_COMPRESSION = 0.5


def music_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Four tremolo tones over a little noise: tonal content with dynamics, as a codec's psychoacoustics expect."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(
        0.1 * np.sin(2 * np.pi * hz * t) * (1 + np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        for hz in rng.uniform(100, 800, 4)
    )
    return (tones + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def decoded(data: bytes) -> tuple[np.ndarray, int, str]:
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples, rate, soundfile.info(io.BytesIO(data)).format


@pytest.mark.parametrize(("audio_format", "container"), [(AudioFormat.MP3, "MP3"), (AudioFormat.OPUS, "OGG")])
@pytest.mark.parametrize(("compression", "bound"), [(0.0, CLOSE), (None, CLOSE), (1.0, CLOSE_AT_MOST_COMPRESSION)])
def test_lossy_formats_decode_to_the_same_length_and_close_to_the_wav(
    audio_format: AudioFormat, container: str, compression: float | None, bound: float
) -> None:
    clip = music_like()
    wav, _, _ = decoded(encode_audio(clip, RATE, AudioFormat.WAV))
    samples, rate, found = decoded(encode_audio(clip, RATE, audio_format, compression))
    assert (found, rate, samples.ndim, len(samples)) == (container, RATE, 1, len(clip))
    assert spectral_distance(wav, samples) <= bound


@pytest.mark.parametrize("audio_format", [AudioFormat.FLAC, AudioFormat.MP3, AudioFormat.OPUS])
def test_compression_makes_smaller_files(audio_format: AudioFormat) -> None:
    clip = music_like()
    sizes = [len(encode_audio(clip, RATE, audio_format, c)) for c in (0.0, None, 1.0)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_flac_stays_lossless_at_every_compression() -> None:
    """The same 16-bit samples at both bounds; within one step of the WAV (libsndfile rounds floats to 16-bit
    slightly differently for the two containers)."""
    clip = music_like()
    wav, _, _ = decoded(encode_audio(clip, RATE, AudioFormat.WAV))
    fastest, smallest = (decoded(encode_audio(clip, RATE, AudioFormat.FLAC, c))[0] for c in (0.0, 1.0))
    assert np.array_equal(fastest, smallest)
    assert np.abs(fastest - wav).max() <= 1 / 32768


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"format": "mp3", "compression": -0.1}, "greater than or equal to 0"),
        ({"format": "opus", "compression": 1.01}, "less than or equal to 1"),
        ({"format": "wav", "compression": 0.5}, "wav is uncompressed"),
        ({"compression": 0.5}, "wav is uncompressed"),
    ],
)
def test_compression_out_of_range_or_with_wav_is_refused_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        GenerateRequest.model_validate_json(json.dumps({"prompt": "x", **fields}))
    assert [(e["loc"], message in e["msg"]) for e in refused.value.errors()] == [(("compression",), True)]
