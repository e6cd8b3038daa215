"""Upload decoding (audio_io.py): containers, down-mix, resampling, limits checked before decoding, memory."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from audio_io import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioInputError, decode_upload, probe_upload
from tests.audio_files import CONTAINERS, audio_file

ROOT = Path(__file__).resolve().parent.parent.parent


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


def reference_decode(path: Path, sample_rate: int, frames: int) -> np.ndarray:
    """The whole-file decode this module used before it streamed: read all, down-mix, resample once."""
    samples, rate = soundfile.read(str(path), frames=frames, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    return mono if rate == sample_rate else soxr.resample(mono, rate, sample_rate)


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    """A different tone in each channel, so a wrong down-mix or a misplaced block shows."""
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.1 * np.sin(2 * np.pi * 110 * (c + 1) * t) for c in range(channels)], axis=1)


@pytest.mark.parametrize(
    ("container", "seconds", "rate", "channels", "max_seconds"),
    [
        ("wav", 2.0, 44_100, 2, 30),
        ("flac", 3.0, 48_000, 8, 30),  # 1.15 M samples: several decode blocks
        ("flac", 5.0, 96_000, 6, 3.5),  # truncated mid-block
        ("wav", 1.0, 22_050, 1, 30),
        ("wav", 3.0, 16_000, 3, 30),  # at the model's rate: down-mix only
        ("ogg", 2.0, 44_100, 2, 30),
        ("mp3", 2.0, 32_000, 2, 30),
    ],
)
def test_block_decode_matches_the_whole_file_decode(
    tmp_path: Path, container: str, seconds: float, rate: int, channels: int, max_seconds: float
) -> None:
    """Same length exactly and the same samples to 1e-6: both run the same soxr HQ filter in float32 and
    differ only in how the input is chunked, so only float32 rounding may differ (soxr 1.1.0 gives equal
    arrays); 1e-6 is 1/30 of a 16-bit step."""
    path = tmp_path / f"clip.{container}"
    fmt, subtype = CONTAINERS[container]
    soundfile.write(path, tone(seconds, rate, channels), rate, format=fmt, subtype=subtype)
    frames = min(soundfile.info(str(path)).frames, int(max_seconds * rate))
    expected = reference_decode(path, 16_000, frames)
    clip = decode_upload(path, "audio", 16_000, max_seconds, truncate=True)
    assert len(clip.samples) == len(expected)
    np.testing.assert_allclose(clip.samples, expected, rtol=0, atol=1e-6)
    assert clip.truncated == (seconds > max_seconds)


@pytest.mark.parametrize(
    ("container", "subtype"),
    [
        ("WAV", "PCM_U8"),
        ("WAV", "PCM_16"),
        ("WAV", "PCM_24"),
        ("WAV", "PCM_32"),
        ("FLAC", "PCM_S8"),
        ("FLAC", "PCM_24"),
    ],
)
@pytest.mark.parametrize("channels", [1, 2, 5])
def test_integer_pcm_read_as_integers_gives_libsndfiles_float_samples(
    tmp_path: Path, container: str, subtype: str, channels: int
) -> None:
    """Integer PCM is read as integers and scaled here (INTEGER_READS, 20x cheaper than libsndfile's float
    conversion): the samples are exactly those of libsndfile's float read, down-mixed alike. At 16 kHz, so no
    resampling stands between them."""
    path = tmp_path / "clip.audio"
    noise = np.random.default_rng(channels).uniform(-1, 1, (16_000, channels))
    soundfile.write(path, noise, 16_000, format=container, subtype=subtype)
    as_float, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    expected = as_float @ np.full(channels, 1 / channels, dtype=np.float32)
    np.testing.assert_array_equal(decode_upload(path, "audio", 16_000, 30, truncate=False).samples, expected)


@pytest.mark.parametrize("container", ["WAVEX", "RF64", "W64"])
def test_wav_variants_decode_like_a_plain_wav(tmp_path: Path, container: str) -> None:
    """WAVE_FORMAT_EXTENSIBLE (libsndfile's WAVEX: most 24-bit, multichannel or high-rate WAVs) and the 64-bit
    RF64 and W64 hold the same PCM as a plain WAV: 24-bit stereo 48 kHz decodes to the same 16 kHz mono."""
    samples = tone(2.0, 48_000, 2)
    variant, plain = tmp_path / "variant.wav", tmp_path / "plain.wav"
    soundfile.write(variant, samples, 48_000, format=container, subtype="PCM_24")
    soundfile.write(plain, samples, 48_000, format="WAV", subtype="PCM_24")
    assert probe_upload(variant, "audio").format == container
    clip = decode_upload(variant, "audio", 16_000, 30, truncate=False)
    assert clip.sample_rate == 16_000 and len(clip.samples) == 32_000
    np.testing.assert_array_equal(clip.samples, decode_upload(plain, "audio", 16_000, 30, truncate=False).samples)


def test_non_finite_samples_are_refused(tmp_path: Path) -> None:
    samples = tone(1.0, 44_100, 2).astype(np.float32)
    samples[30_000, 1] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, samples, 44_100, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="non-finite samples") as error:
        decode_upload(path, "audio", 16_000, 30, truncate=False)
    assert error.value.status == 400


@pytest.mark.parametrize(
    ("rate", "channels", "message"),
    [
        (655_350, 8, "the sample rate is 655350 Hz; accepted rates are 8000 to 384000 Hz"),
        (4_000, 1, "the sample rate is 4000 Hz; accepted rates are 8000 to 384000 Hz"),
        (16_000, 33, "the file has 33 channels; the limit is 32"),
    ],
)
def test_header_limits_are_refused_before_decoding(tmp_path: Path, rate: int, channels: int, message: str) -> None:
    path = tmp_path / "upload"
    fmt = "FLAC" if channels <= 8 else "WAV"
    soundfile.write(path, np.zeros((rate // 10, channels), dtype=np.int16), rate, format=fmt, subtype="PCM_16")
    for check in (lambda: probe_upload(path, "audio"), lambda: decode_upload(path, "audio", 16_000, 30, truncate=True)):
        with pytest.raises(AudioInputError, match=message) as error:
            check()
        assert error.value.status == 400 and error.value.field == "audio"


@pytest.mark.parametrize(("rate", "channels"), [(MIN_SAMPLE_RATE, 1), (MAX_SAMPLE_RATE, 2), (48_000, MAX_CHANNELS)])
def test_header_limits_admit_their_bounds(tmp_path: Path, rate: int, channels: int) -> None:
    path = tmp_path / "upload.wav"
    soundfile.write(path, tone(0.5, rate, channels), rate, subtype="PCM_16")
    clip = decode_upload(path, "audio", 16_000, 30, truncate=False)
    assert len(clip.samples) == 8_000


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"<html><img src=x onerror=alert(1)></html>" * 10, 415, "not a readable audio file"),
        (audio_file("flac", 2.0)[:5_000], 400, "the audio could not be decoded"),  # header fine, frames cut off
    ],
)
def test_messages_hold_neither_the_server_path_nor_the_client_filename(
    tmp_path: Path, data: bytes, status: int, message: str
) -> None:
    """libsndfile's exception text quotes the path it opened; a client-chosen name must not come back as markup."""
    path = write(tmp_path, data, "tmpXXXX<img src=x onerror=alert(1)>.wav")
    with pytest.raises(AudioInputError, match=message) as error:
        decode_upload(path, "audio", 16_000, 30, truncate=False)
    assert error.value.status == status
    for text in (error.value.message, str(error.value)):
        for leak in (str(path), str(tmp_path), tempfile.gettempdir(), "<", "onerror"):
            assert leak not in text


MEMORY_PROBE = """
import contextlib, json, sys, tracemalloc
from pathlib import Path
from audio_io import decode_upload

def status(key: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024

decode_upload(Path(sys.argv[2]), "audio", 16_000, 600, truncate=True)  # libraries loaded, allocators primed
with contextlib.suppress(OSError):  # peak RSS (VmHWM) := current RSS; if refused, the peak since exec
    Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
tracemalloc.start()  # numpy reports its buffers to tracemalloc
clip = decode_upload(Path(sys.argv[1]), "audio", 16_000, 600, truncate=True)
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"samples": len(clip.samples), "traced": traced, "rss": status("VmHWM") - before}))
"""


def test_memory_follows_the_mono_output_not_the_channels_and_rate(tmp_path: Path) -> None:
    """8 channels at 192 kHz for 160 s is a small FLAC of silence but 0.9 GB as float32: the decode must
    stay near the 10 MiB of 16 kHz mono it makes. Measured in a fresh process, after a warm-up decode:
    the rise of its peak RSS (everything: libsndfile, soxr, numpy; from /proc, as ru_maxrss keeps the
    parent's peak across exec) and tracemalloc's peak (numpy)."""
    rate, channels, seconds = 192_000, 8, 160
    path, warm_up = tmp_path / "silence.flac", tmp_path / "warm_up.flac"
    second = np.zeros((rate, channels), dtype=np.int16)
    with soundfile.SoundFile(path, "w", rate, channels, format="FLAC", subtype="PCM_16") as upload:
        for _ in range(seconds):
            upload.write(second)
    soundfile.write(warm_up, second, rate, format="FLAC", subtype="PCM_16")
    assert path.stat().st_size < 1024 * 1024
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path), str(warm_up)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    measured = json.loads(probe.stdout.splitlines()[-1])
    output_bytes = seconds * 16_000 * 4
    whole_decode_bytes = seconds * rate * channels * 4
    limit = 3 * output_bytes + 32 * 2**20
    mib = {key: f"{value / 2**20:.1f} MiB" for key, value in measured.items() if key != "samples"}
    print(f"output {output_bytes / 2**20:.1f} MiB, whole decode {whole_decode_bytes / 2**20:.0f} MiB, peak rise {mib}")
    assert measured["samples"] == seconds * 16_000
    assert measured["traced"] < limit and measured["rss"] < limit


def test_a_file_asking_for_too_many_decoded_samples_is_refused_from_its_header(tmp_path: Path) -> None:
    """8 channels at 192 kHz for 300 s (a 476 KB FLAC) is 461 M samples to decode: refused before decoding."""
    path = tmp_path / "silence.flac"
    second = np.zeros((192_000, 8), dtype=np.int16)
    with soundfile.SoundFile(path, "w", 192_000, 8, format="FLAC", subtype="PCM_16") as upload:
        for _ in range(300):
            upload.write(second)
    with pytest.raises(AudioInputError, match=r"461 M samples to decode .* the limit is 268 M") as refused:
        decode_upload(path, "audio", 16_000, 600, truncate=True)
    assert refused.value.status == 400
    clip = decode_upload(path, "audio", 16_000, 20, truncate=True)  # what is decoded counts, not the file
    assert clip.truncated and clip.seconds == 20
