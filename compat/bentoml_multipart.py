"""Strict multipart/form-data parsing for the public API, in place of BentoML's own.

What it changes: `_bentoml_impl.serde.ALL_SERDE`, the table BentoML's app looks a request's serde up in
(`ServiceAppFactory.api_endpoint`, per request), maps both form media types to `StrictMultipartSerde`, a
subclass of BentoML's `MultipartSerde` with its own `parse_request`. Uploads are copied into BentoML's
per-request temporary folder (`bentoml._internal.context.request_temp_dir`), which BentoML empties afterwards.

Why: BentoML 1.4.39's form parser (`MultipartSerde.parse_request`) parses every
text part as JSON (`prompt=808` becomes a number, `prompt=null` disappears),
downloads a text value sent in a file field as a URL (a request to an address
the client chose), turns Starlette's 400 for a malformed body into a 500, and
stores each upload under the client's filename (a 300-byte name is a 500).
This parser keeps text parts as text (pydantic still coerces them where the
field is a number, a flag or a choice), takes only file parts in file fields and
no more of them than the field holds, answers a malformed form with a 400 that
names the problem, and copies each upload in chunks to a temporary file with a
name of its own. One exception keeps BentoML's own Python client working: it
JSON-encodes every text field it sends (`"key"` with the quotes), so for that
client (its User-Agent says so) text fields are JSON-decoded, as BentoML did.

No upstream issue. Checked range: `_bentoml_impl/serde.py`, `_bentoml_impl/server/app.py` and
`bentoml/_internal/context.py` are the same in the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path, PurePath
from typing import Any, TypeVar, get_args, get_origin

import anyio
from _bentoml_impl.serde import ALL_SERDE, MultipartSerde
from bentoml._internal.context import request_temp_dir
from pydantic import BaseModel
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from compat import Patch

PATCH = Patch(
    name="bentoml_multipart",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML's form parser JSON-decodes text parts, fetches URLs sent in file fields and 500s on bad forms",
)

T = TypeVar("T", bound=BaseModel)

MAX_FORM_FIELDS = 64  # text parts; the largest form declares 12 fields
MAX_FORM_FILES = 4  # file parts; the most a route takes is 2
MAX_TEXT_PART_BYTES = 128 * 1024  # a 20,000-character prompt is at most 80 KiB of UTF-8
KEPT_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga")  # libsndfile reads the content, the suffix only helps
COPY_CHUNK_BYTES = 1024 * 1024
JSON_ENCODING_CLIENT = "BentoML HTTP Client/"  # bentoml.SyncHTTPClient / AsyncHTTPClient's User-Agent prefix


def form_error(field: str, message: str) -> ValidationError:
    """A 400 in the API's usual validation shape, naming `field`."""
    error = PydanticCustomError("invalid_form", message.replace("{", "{{").replace("}", "}}"))
    return ValidationError.from_exception_data("form", [InitErrorDetails(type=error, loc=(field,), input=None)])


def json_decoded(value: str | UploadFile) -> Any:
    if isinstance(value, UploadFile):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def is_list_field(model: type[BaseModel], field: str) -> bool:
    annotation = model.model_fields[field].annotation
    return get_origin(annotation) is list or list in map(get_origin, get_args(annotation))


def files_allowed(model: type[BaseModel], field: str) -> int:
    """How many file parts a file field takes: 1 for a single file, the list's `max_length` for a list."""
    if not is_list_field(model, field):
        return 1
    limits = [m.max_length for m in model.model_fields[field].metadata if getattr(m, "max_length", None)]
    return min(limits or [MAX_FORM_FILES])


def store_upload(upload: UploadFile) -> Path:
    """Copy an upload to this request's temporary folder under a generated name (the suffix kept if audio)."""
    suffix = PurePath(upload.filename or "").suffix.lower()
    with tempfile.NamedTemporaryFile(
        dir=request_temp_dir(), prefix="upload-", suffix=suffix if suffix in KEPT_SUFFIXES else "", delete=False
    ) as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out, COPY_CHUNK_BYTES)
    return Path(out.name)


class StrictMultipartSerde(MultipartSerde):
    async def parse_request(self, request: Request, cls: type[T]) -> T:
        try:
            form = await request.form(
                max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_TEXT_PART_BYTES
            )
        except (MultiPartException, HTTPException) as exc:
            message = exc.message if isinstance(exc, MultiPartException) else str(exc.detail)
            raise form_error("body", f"malformed multipart/form-data: {message}") from None
        file_fields = set(getattr(cls, "multipart_fields", ()))
        json_text = request.headers.get("user-agent", "").startswith(JSON_ENCODING_CLIENT)
        data: dict[str, Any] = {}
        try:
            for name in dict.fromkeys(form.keys()):
                values = [v for v in form.getlist(name) if not (isinstance(v, UploadFile) and not v.filename)]
                if name in file_fields and values:
                    data[name] = await self.stored_files(cls, name, values)
                elif len(values) > 1:
                    raise form_error(name, "sent more than once; send each field once")
                elif values:  # a file here fails validation as "not a string" (or an unknown field), with the rest
                    data[name] = json_decoded(values[0]) if json_text else values[0]
        finally:
            await form.close()  # the copies live on; the spooled originals go now
        return cls.model_validate(data, strict=False)  # text parses into numbers, flags and choices

    @staticmethod
    async def stored_files(cls: type[BaseModel], name: str, values: list[UploadFile | str]) -> Path | list[Path]:
        """The uploads of one file field, copied; a single-file field gets its one path."""
        allowed = files_allowed(cls, name)
        uploads = [v for v in values if isinstance(v, UploadFile)]
        if len(uploads) < len(values):
            raise form_error(name, "must be a file part (with a filename); text and URLs are not accepted")
        if len(uploads) > allowed:
            raise form_error(name, f"{len(uploads)} files sent; this field takes at most {allowed}")
        paths = [await anyio.to_thread.run_sync(store_upload, upload) for upload in uploads]
        return paths if is_list_field(cls, name) else paths[0]


def install() -> None:
    """Make the strict parser the one BentoML uses for forms in this process."""
    ALL_SERDE["multipart/form-data"] = StrictMultipartSerde  # type: ignore[index]
    ALL_SERDE["application/x-www-form-urlencoded"] = StrictMultipartSerde  # type: ignore[index]
