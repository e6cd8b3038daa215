"""Upload decoding (audio_io.py): containers, down-mix, resampling, limits checked before decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from audio_io import AudioInputError, decode_upload
from tests.audio_files import audio_file


def write(tmp_path: Path, data: bytes, name: str = "upload") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("container", ["wav", "flac", "mp3", "ogg"])
def test_each_container_decodes_to_mono_16k(tmp_path: Path, container: str) -> None:
    clip = decode_upload(write(tmp_path, audio_file(container, 2.0)), "audio", 16_000, 30, truncate=False)
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert clip.sample_rate == 16_000
    assert abs(clip.seconds - 2.0) < 0.1  # MP3/OGG encoders add a little padding
    assert not clip.truncated
    assert 0.1 < np.abs(clip.samples).max() <= 0.61  # two 0.3 tones averaged into one channel


def test_resampling_keeps_the_pitch(tmp_path: Path) -> None:
    clip = decode_upload(
        write(tmp_path, audio_file("wav", 1.0, rate=48_000, hz=1000.0)), "a", 16_000, 30, truncate=False
    )
    spectrum = np.abs(np.fft.rfft(clip.samples))
    peak_hz = np.argmax(spectrum) * 16_000 / len(clip.samples)
    assert abs(peak_hz - 1000) < 5 or abs(peak_hz - 1500) < 5


def test_too_long_is_refused_before_decoding_or_truncated_on_request(tmp_path: Path) -> None:
    path = write(tmp_path, audio_file("flac", 5.0))
    with pytest.raises(AudioInputError, match=r"5\.00 s long; the limit is 3 s") as refused:
        decode_upload(path, "audio", 16_000, 3, truncate=False)
    assert refused.value.status == 400 and refused.value.field == "audio"
    clip = decode_upload(path, "audio", 16_000, 3, truncate=True)
    assert clip.truncated and clip.seconds == 3.0 and abs(clip.source_seconds - 5.0) < 1e-6


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"this is not audio at all" * 10, 415, "not a readable audio file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), 415, "not a readable audio file"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path: Path, data: bytes, status: int, message: str) -> None:
    with pytest.raises(AudioInputError, match=message) as error:
        decode_upload(write(tmp_path, data), "reference", 16_000, 30, truncate=False)
    assert error.value.status == status and error.value.field == "reference"


def test_unaccepted_container_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(16_000, dtype=np.float32), 16_000, format="AIFF")
    with pytest.raises(AudioInputError, match="AIFF files are not accepted") as error:
        decode_upload(write(tmp_path, buffer.getvalue()), "audio", 16_000, 30, truncate=False)
    assert error.value.status == 415
