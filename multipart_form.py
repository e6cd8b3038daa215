"""A multipart/form-data body read as it arrives: text parts kept in memory (each bounded), each uploaded file
written once, straight to a file of its own in the request's folder.

Why not Starlette's `request.form()`: it spools each upload in memory up to 1 MiB, then to an anonymous temporary
file with one worker-thread hop per received chunk, and BentoML needs a named file, so the API copied every upload
once more. For a 5.3 MB WAV that was 3 writes, a read and about 20 thread hops. Here a file part's bytes gather
in a buffer and go to disk a megabyte at a time, from a worker thread, so memory per request stays at about a
megabyte per file part whatever the client sends. The messages are Starlette's, so clients see the same 400s.
"""

from __future__ import annotations

import codecs
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

FLUSH_BYTES = 1024 * 1024  # a file part's bytes held in memory before they go to disk
CALLBACKS = (
    "on_part_begin",
    "on_header_field",
    "on_header_value",
    "on_header_end",
    "on_headers_finished",
    "on_part_data",
    "on_part_end",
)


class MalformedForm(ValueError):
    """The body is not a form this API reads; the message says why (no server path, no client filename)."""


@dataclass
class StoredFile:
    """One uploaded file, on disk under a name of our own; `pending` holds the bytes not yet written."""

    filename: str
    path: Path
    pending: bytearray = field(default_factory=bytearray)
    created: bool = False

    async def flush(self) -> None:
        data, self.pending = self.pending, bytearray()
        mode = "ab" if self.created else "xb"
        self.created = True
        await anyio.to_thread.run_sync(self._write, data, mode)

    def _write(self, data: bytearray, mode: str) -> None:
        with self.path.open(mode) as out:
            out.write(data)


@dataclass
class FormLimits:
    max_fields: int  # text parts
    max_files: int  # file parts
    max_text_bytes: int  # one text part


@dataclass
class _Part:
    name: str = ""
    text: bytearray = field(default_factory=bytearray)
    file: StoredFile | None = None
    skipped: bool = False  # a file input left empty (filename ""): browsers send one; it counts as absent
    disposition: bytes = b""


class _FormReader:
    """python-multipart's callbacks, collecting parts; file bytes wait in their part's buffer for `flush`."""

    def __init__(self, charset: str, folder: Path, limits: FormLimits, suffixes: tuple[str, ...]) -> None:
        self.charset, self.folder, self.limits, self.suffixes = charset, folder, limits, suffixes
        self.items: list[tuple[str, str | StoredFile]] = []
        self.files: list[StoredFile] = []
        self.part = _Part()
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.fields = self.file_parts = 0

    def text(self, data: bytes) -> str:
        try:
            return data.decode(self.charset)
        except UnicodeDecodeError:
            return data.decode("latin-1")

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.part.disposition = bytes(self.header_value)
        self.header_name, self.header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.disposition)
        if b"name" not in options:
            raise MalformedForm('The Content-Disposition header field "name" must be provided.')
        self.part.name = self.text(options[b"name"])
        if b"filename" not in options:
            self.fields += 1
            if self.fields > self.limits.max_fields:
                raise MalformedForm(f"Too many fields. Maximum number of fields is {self.limits.max_fields}.")
            return
        self.file_parts += 1
        if self.file_parts > self.limits.max_files:
            raise MalformedForm(f"Too many files. Maximum number of files is {self.limits.max_files}.")
        filename = self.text(options[b"filename"])
        if not filename:
            self.part.skipped = True
            return
        suffix = PurePath(filename).suffix.lower()
        name = f"upload-{secrets.token_hex(8)}{suffix if suffix in self.suffixes else ''}"
        self.part.file = StoredFile(filename, self.folder / name)
        self.files.append(self.part.file)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.file is not None:
            self.part.file.pending += memoryview(data)[start:end]  # a view: one copy, not a slice's two
        elif not self.part.skipped:
            if len(self.part.text) + end - start > self.limits.max_text_bytes:
                raise MalformedForm(f"Part exceeded maximum size of {self.limits.max_text_bytes // 1024}KB.")
            self.part.text += data[start:end]

    def on_part_end(self) -> None:
        if self.part.file is not None:
            self.items.append((self.part.name, self.part.file))
        elif not self.part.skipped:
            self.items.append((self.part.name, self.text(bytes(self.part.text))))

    async def flush(self, at_least: int) -> None:
        for stored in self.files:
            if len(stored.pending) >= at_least and (stored.pending or not stored.created):
                await stored.flush()


async def read_form(
    content_type: str,
    chunks: AsyncIterator[bytes],
    folder: Path,
    limits: FormLimits,
    suffixes: tuple[str, ...] = (),
) -> list[tuple[str, str | StoredFile]]:
    """The parts of a multipart/form-data body in order: (name, text) or (name, StoredFile)."""
    _, params = parse_options_header(content_type)
    if b"boundary" not in params:
        raise MalformedForm("Missing boundary in multipart.")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    reader = _FormReader(charset, folder, limits, suffixes)
    callbacks = {name: getattr(reader, name) for name in CALLBACKS}
    parser = MultipartParser(params[b"boundary"], callbacks)
    try:
        async for chunk in chunks:
            parser.write(chunk)
            await reader.flush(at_least=FLUSH_BYTES)
        parser.finalize()
    except FormParserError:
        raise MalformedForm("Invalid multipart data.") from None
    await reader.flush(at_least=0)
    return reader.items
