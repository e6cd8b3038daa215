"""multipart_form.py: a form body read as it arrives, uploads written straight to their files."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from multipart_form import FLUSH_BYTES, FormLimits, MalformedForm, StoredFile, read_form

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
LIMITS = FormLimits(max_fields=4, max_files=2, max_text_bytes=1024)


def text_part(name: str, value: str) -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def file_part(name: str, filename: str, data: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
    return head.encode() + b"Content-Type: audio/wav\r\n\r\n" + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def chunked(data: bytes, size: int, between: Callable[[int], None] = lambda sent: None) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        between(start + size)


def read(
    data: bytes, folder: Path, chunk: int = 65536, limits: FormLimits = LIMITS, content_type: str = CONTENT_TYPE
) -> list[tuple[str, str | StoredFile]]:
    return asyncio.run(read_form(content_type, chunked(data, chunk), folder, limits, (".wav",)))


@pytest.mark.parametrize("chunk", [1, 7, 65536, 10**8])
def test_parts_come_back_in_order_whatever_the_chunking(tmp_path: Path, chunk: int) -> None:
    audio = os.urandom(3000) + f"\r\n--{BOUNDARY}".encode()[:-1] + os.urandom(100)  # almost a boundary inside
    parts = read(body(text_part("prompt", "héllo"), file_part("audio", "take 1.WAV", audio)), tmp_path, chunk)
    assert [name for name, _ in parts] == ["prompt", "audio"]
    assert parts[0][1] == "héllo"
    stored = parts[1][1]
    assert isinstance(stored, StoredFile) and stored.filename == "take 1.WAV"
    assert stored.path.parent == tmp_path and stored.path.suffix == ".wav" and "take" not in stored.path.name
    assert stored.path.read_bytes() == audio


def test_a_large_upload_goes_to_disk_as_it_arrives(tmp_path: Path) -> None:
    """Memory per upload stays near FLUSH_BYTES: before the body ends, most of it is already on disk."""
    audio = os.urandom(5 * FLUSH_BYTES + 12345)
    data = body(file_part("audio", "a.mp3", audio))
    on_disk_while_sending: list[int] = []

    def note(sent: int) -> None:
        files = list(tmp_path.iterdir())
        if files and sent < len(data):
            on_disk_while_sending.append(sent - files[0].stat().st_size)

    parts = asyncio.run(read_form(CONTENT_TYPE, chunked(data, 65536, note), tmp_path, LIMITS, (".wav",)))
    stored = parts[0][1]
    assert isinstance(stored, StoredFile) and stored.path.suffix == ""  # .mp3 is not among the kept suffixes
    assert stored.path.read_bytes() == audio
    assert on_disk_while_sending and max(on_disk_while_sending) <= FLUSH_BYTES + 65536 + 512


def test_a_255_byte_filename_is_within_the_part_header_bound(tmp_path: Path) -> None:
    parts = read(body(file_part("audio", "a" * 251 + ".wav", b"RIFF")), tmp_path, chunk=7)
    stored = parts[0][1]
    assert isinstance(stored, StoredFile) and stored.path.read_bytes() == b"RIFF"


def test_an_empty_file_input_is_absent_and_an_empty_file_is_a_file(tmp_path: Path) -> None:
    parts = read(body(file_part("reference", "", b""), file_part("audio", "a.wav", b"")), tmp_path)
    assert [name for name, _ in parts] == ["audio"]
    stored = parts[0][1]
    assert isinstance(stored, StoredFile) and stored.path.read_bytes() == b""


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (body(text_part("a", "x")), "multipart/form-data", "Missing boundary"),
        (b"garbage--" + BOUNDARY.encode() + b"--", CONTENT_TYPE, "Invalid multipart data"),
        (body(*[text_part(f"f{i}", "x") for i in range(5)]), CONTENT_TYPE, "Maximum number of fields is 4"),
        (body(*[file_part("audio", "a.wav", b"x")] * 3), CONTENT_TYPE, "Maximum number of files is 2"),
        (body(text_part("prompt", "x" * 1025)), CONTENT_TYPE, "Part exceeded maximum size of 1KB"),
        (body(b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data\r\n\r\nx\r\n"), CONTENT_TYPE, '"name"'),
        # python-multipart bounds a part's header lines (4224 bytes each, 8 per part): part headers never grow
        # with the body limit. This pins that bound, which multipart_form.py relies on.
        (body(file_part("audio", "a" * 5000 + ".wav", b"x")), CONTENT_TYPE, "Invalid multipart data"),
    ],
)
def test_malformed_bodies_and_limits_are_named(tmp_path: Path, data: bytes, content_type: str, message: str) -> None:
    with pytest.raises(MalformedForm, match=message):
        read(data, tmp_path, content_type=content_type)
