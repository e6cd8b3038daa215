"""Audio files in and out of the service (libsndfile through `soundfile`, resampling with `soxr`).

Shared by every API that takes or returns audio: uploads are checked (size,
container, channels, sample rate, duration from the header) before the samples
are decoded, then decoded a block at a time, each block down-mixed to mono and
resampled to the model's rate, so that memory follows the mono output, not the
channels x rate x length a small compressed file can declare.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from schemas import DEFAULT_COMPRESSION, AudioFormat

# libsndfile's container and subtype for each output format.
CODECS = {
    AudioFormat.WAV: ("WAV", "PCM_16"),
    AudioFormat.FLAC: ("FLAC", "PCM_16"),
    AudioFormat.MP3: ("MP3", "MPEG_LAYER_III"),
    AudioFormat.OPUS: ("OGG", "OPUS"),
}
# libsndfile maps an mp3 compression level c to LAME's VBR quality 10 c, and LAME refuses 10: the public 0..1 is
# scaled onto 0..0.999 (-V 9.99), so that 1 is the smallest file LAME makes rather than an error.
MP3_MAX_LEVEL = 0.999
# libsndfile's names of the containers decoded. Besides plain WAV: WAVEX, the WAVE_FORMAT_EXTENSIBLE header that
# most 24-bit, multichannel and high-rate WAVs carry (recorders, DAWs, ffmpeg), and RF64 and W64, WAV's 64-bit
# variants for files past 4 GiB (broadcast recorders, Sound Forge). All four decode as the same PCM or float.
UPLOAD_CONTAINERS = ("WAV", "WAVEX", "RF64", "W64", "FLAC", "MP3", "OGG")
ACCEPTED_CONTAINERS = "WAV (RF64 and W64 included), FLAC, MP3 or OGG"
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
# Up to third-order Ambisonics (16) and 22.2 surround (24) with room to spare; FLAC and MP3 stop at 8 and 2
# anyway. More is no recording a model listens to, only work: every channel is decoded to be down-mixed.
MAX_CHANNELS = 32
# 8 kHz is telephony, the lowest rate in common use; 384 kHz is the highest that studio converters record
# (DXD is 352.8 kHz). Beyond them lie only hostile files: decoding cost grows with the rate, and soxr with
# the ratio to the model's 16 kHz.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
# Samples (all channels together) one upload may ask to decode: 1200 s of 96 kHz stereo (230 M) fits. Memory is
# bounded by the block decode anyway; this bounds the CPU time a small, highly compressed file can cost.
MAX_DECODED_SAMPLES = 256 * 1024 * 1024
# Samples (all channels together) decoded per block: 1 MiB of float32, whatever the channel count.
DECODE_BLOCK_SAMPLES = 1 << 18
# Integer PCM read as integers and scaled here: libsndfile's own conversion to float costs 6 ms per 30 s of 44.1 kHz
# stereo, 20x the integer read. libsndfile scales by the same powers of two (it left-aligns 8 and 24 bits in the
# integer it returns), so the samples are the same. Other subtypes (float, MP3, Vorbis, Opus, A-law...) read as float.
INTEGER_READS = {
    "PCM_S8": (np.int16, 2.0**-15),
    "PCM_U8": (np.int16, 2.0**-15),
    "PCM_16": (np.int16, 2.0**-15),
    "PCM_24": (np.int32, 2.0**-31),
    "PCM_32": (np.int32, 2.0**-31),
}


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


def encode_audio(
    samples: np.ndarray, sample_rate: int, audio_format: AudioFormat, compression: float | None = None
) -> bytes:
    """Mono float samples -> a file in `audio_format`; values beyond full scale are clipped, not wrapped.

    `compression` (0..1, see schemas.DeliveryParams) defaults per format; wav has none. The file is written to a
    seekable buffer, so an mp3 carries LAME's info tag (encoder delay and padding) and decodes to exactly
    `len(samples)` samples.
    """
    container, subtype = CODECS[audio_format]
    level = DEFAULT_COMPRESSION.get(audio_format) if compression is None else compression
    if level is not None and audio_format is AudioFormat.MP3:
        level *= MP3_MAX_LEVEL
    buffer = io.BytesIO()
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    soundfile.write(
        buffer,
        clipped,
        sample_rate,
        format=container,
        subtype=subtype,
        compression_level=level,
        bitrate_mode="VARIABLE" if audio_format is AudioFormat.MP3 else None,
    )
    return buffer.getvalue()


def probe_upload(path: Path, field: str) -> soundfile._SoundFileInfo:
    """Check an upload from its size and header alone: container, channels, sample rate, length.

    Messages name the field and the problem only: libsndfile's own text holds the server's path to the
    upload, whose name the client chose.
    """
    size = path.stat().st_size
    if size == 0:
        raise AudioInputError(field, "the uploaded file is empty")
    if size > MAX_UPLOAD_BYTES:
        raise AudioInputError(field, f"the file is {size} bytes; the limit is {MAX_UPLOAD_BYTES} bytes", status=413)
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioInputError(field, f"not a readable audio file (expected {ACCEPTED_CONTAINERS})", status=415) from exc
    if info.format not in UPLOAD_CONTAINERS:
        raise AudioInputError(field, f"{info.format} files are not accepted; send {ACCEPTED_CONTAINERS}", status=415)
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioInputError(field, "the file holds no audio samples")
    if info.channels > MAX_CHANNELS:
        raise AudioInputError(field, f"the file has {info.channels} channels; the limit is {MAX_CHANNELS}")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioInputError(
            field,
            f"the sample rate is {info.samplerate} Hz; accepted rates are {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
        )
    return info


def _resampled_length(frames: int, rate: int, sample_rate: int) -> int:
    """How many samples soxr makes of `frames` at `rate` (one-shot and streamed alike)."""
    return int(frames * sample_rate / rate + 0.5)


def decode_upload(
    path: Path, field: str, sample_rate: int, max_seconds: float, *, truncate: bool, min_seconds: float = 0.0
) -> DecodedAudio:
    """Decode an uploaded WAV/FLAC/MP3/OGG file to mono float32 at `sample_rate`; shorter than `min_seconds`
    once decoded is refused.

    Longer than `max_seconds`: with `truncate`, only the first `max_seconds`
    are decoded; otherwise the upload is refused before decoding. Blocks of
    `DECODE_BLOCK_SAMPLES` are read, down-mixed and resampled into the output
    one at a time, so memory is the output plus one block.
    """
    info = probe_upload(path, field)
    if info.duration > max_seconds and not truncate:
        raise AudioInputError(field, f"the clip is {info.duration:.2f} s long; the limit is {max_seconds:g} s")
    frames = min(info.frames, int(max_seconds * info.samplerate))
    if frames * info.channels > MAX_DECODED_SAMPLES:
        raise AudioInputError(
            field,
            f"{frames * info.channels / 1e6:.0f} M samples to decode ({info.channels} channels x {info.samplerate} Hz "
            f"x {frames / info.samplerate:.0f} s); the limit is {MAX_DECODED_SAMPLES / 1e6:.0f} M",
        )
    rate = info.samplerate
    stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32") if rate != sample_rate else None
    mono = np.empty(_resampled_length(frames, rate, sample_rate), dtype=np.float32)
    written = decoded = 0

    def put(chunk: np.ndarray) -> None:
        nonlocal written
        if not np.isfinite(chunk).all():
            raise AudioInputError(field, "the audio contains non-finite samples (NaN/Inf)")
        kept = min(len(chunk), len(mono) - written)  # never past the preallocated length, whatever soxr returns
        mono[written : written + kept] = chunk[:kept]
        written += kept

    try:
        with soundfile.SoundFile(str(path)) as upload:
            read_as, scale = INTEGER_READS.get(upload.subtype, (np.float32, 1.0))
            # Every block goes through the same three buffers: fresh ones per block were fresh mappings under the
            # image's allocator setting (models/allocator.py), and their page faults doubled the decode's time.
            block = np.empty((DECODE_BLOCK_SAMPLES // upload.channels, upload.channels), dtype=read_as)
            as_float = block if read_as is np.float32 else np.empty(block.shape, dtype=np.float32)
            down_mixed = np.empty(len(block), dtype=np.float32)
            # The down-mix as a matrix-vector product: numpy's mean over a short last axis is ~60x slower (20 ms
            # for 30 s of stereo), and both give the same samples (halving is exact in binary floating point).
            weights = np.full(upload.channels, 1 / upload.channels, dtype=np.float32)
            while decoded < frames:
                samples = upload.read(dtype=read_as, always_2d=True, out=block[: frames - decoded])
                if len(samples) == 0:
                    break
                decoded += len(samples)
                if as_float is not block:
                    np.multiply(samples, np.float32(scale), out=as_float[: len(samples)])
                mono_block = np.matmul(as_float[: len(samples)], weights, out=down_mixed[: len(samples)])
                put(mono_block if stream is None else stream.resample_chunk(mono_block))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioInputError(field, "the audio could not be decoded") from exc
    if decoded == 0:
        raise AudioInputError(field, "the file holds no audio samples")
    if stream is not None:
        put(stream.resample_chunk(np.empty(0, dtype=np.float32), last=True))
    if written < min_seconds * sample_rate:
        raise AudioInputError(
            field, f"the clip is {written / sample_rate:.2f} s long; the minimum is {min_seconds:g} s"
        )
    return DecodedAudio(
        samples=mono[:written],
        sample_rate=sample_rate,
        source_seconds=float(info.duration),
        truncated=info.frames > frames,
    )
