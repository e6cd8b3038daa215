"""Strict multipart/form-data parsing for the public API, in place of BentoML's own.

What it changes: `_bentoml_impl.serde.ALL_SERDE`, the table BentoML's app looks a request's serde up in
(`ServiceAppFactory.api_endpoint`, per request), maps both form media types to `StrictMultipartSerde`, a
subclass of BentoML's `MultipartSerde` with its own `parse_request`. Uploads are written, as they arrive
(multipart_form.py), into BentoML's per-request temporary folder
(`bentoml._internal.context.request_temp_dir`), which BentoML empties afterwards.

Why: BentoML 1.4.39's form parser (`MultipartSerde.parse_request`) parses every
text part as JSON (`prompt=808` becomes a number, `prompt=null` disappears),
downloads a text value sent in a file field as a URL (a request to an address
the client chose), turns Starlette's 400 for a malformed body into a 500, and
stores each upload under the client's filename (a 300-byte name is a 500).
This parser keeps text parts as text (pydantic still coerces them where the
field is a number, a flag or a choice), takes only file parts in file fields and
no more of them than the field holds, answers a malformed form with a 400 that
names the problem, and writes each upload once, to a file with a name of its
own. One exception keeps BentoML's own Python client working: it
JSON-encodes every text field it sends (`"key"` with the quotes), so for that
client (its User-Agent says so) text fields are JSON-decoded, as BentoML did.

No upstream issue. Checked range: `_bentoml_impl/serde.py`, `_bentoml_impl/server/app.py` and
`bentoml/_internal/context.py` are the same in the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from _bentoml_impl.serde import ALL_SERDE, MultipartSerde
from bentoml._internal.context import request_temp_dir
from pydantic import BaseModel
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from compat import Patch
from multipart_form import FormLimits, MalformedForm, read_form

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
JSON_ENCODING_CLIENT = "BentoML HTTP Client/"  # bentoml.SyncHTTPClient / AsyncHTTPClient's User-Agent prefix


def form_error(field: str, message: str) -> ValidationError:
    """A 400 in the API's usual validation shape, naming `field`."""
    error = PydanticCustomError("invalid_form", message.replace("{", "{{").replace("}", "}}"))
    return ValidationError.from_exception_data("form", [InitErrorDetails(type=error, loc=(field,), input=None)])


def json_decoded(value: str | Path) -> Any:
    if isinstance(value, Path):
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


class StrictMultipartSerde(MultipartSerde):
    async def parse_request(self, request: Request, cls: type[T]) -> T:
        parts = await self.form_parts(request)
        file_fields = set(getattr(cls, "multipart_fields", ()))
        json_text = request.headers.get("user-agent", "").startswith(JSON_ENCODING_CLIENT)
        data: dict[str, Any] = {}
        for name in dict.fromkeys(part_name for part_name, _ in parts):
            values = [value for part_name, value in parts if part_name == name]
            if name in file_fields:
                data[name] = self.stored_files(cls, name, values)
            elif len(values) > 1:
                raise form_error(name, "sent more than once; send each field once")
            else:  # a file here fails validation as "not a string" (or an unknown field), with the rest
                data[name] = json_decoded(values[0]) if json_text else values[0]
        return cls.model_validate(data, strict=False)  # text parses into numbers, flags and choices

    @staticmethod
    async def form_parts(request: Request) -> list[tuple[str, str | Path]]:
        """The form's parts in order, each upload already a file in the request's temporary folder."""
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.lower().startswith("multipart/form-data"):
                limits = FormLimits(MAX_FORM_FIELDS, MAX_FORM_FILES, MAX_TEXT_PART_BYTES)
                parts = await read_form(content_type, request.stream(), Path(request_temp_dir()), limits, KEPT_SUFFIXES)
                return [(name, value if isinstance(value, str) else value.path) for name, value in parts]
            form = await request.form(max_fields=MAX_FORM_FIELDS, max_part_size=MAX_TEXT_PART_BYTES)
            return [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
        except (MalformedForm, MultiPartException, HTTPException) as exc:
            message = exc.message if isinstance(exc, MultiPartException) else getattr(exc, "detail", str(exc))
            raise form_error("body", f"malformed multipart/form-data: {message}") from None

    @staticmethod
    def stored_files(cls: type[BaseModel], name: str, values: list[str | Path]) -> Path | list[Path]:
        """The uploads of one file field: a single-file field gets its one path."""
        allowed = files_allowed(cls, name)
        uploads = [v for v in values if isinstance(v, Path)]
        if len(uploads) < len(values):
            raise form_error(name, "must be a file part (with a filename); text and URLs are not accepted")
        if len(uploads) > allowed:
            raise form_error(name, f"{len(uploads)} files sent; this field takes at most {allowed}")
        return uploads if is_list_field(cls, name) else uploads[0]


def install() -> None:
    """Make the strict parser the one BentoML uses for forms in this process."""
    ALL_SERDE["multipart/form-data"] = StrictMultipartSerde  # type: ignore[index]
    ALL_SERDE["application/x-www-form-urlencoded"] = StrictMultipartSerde  # type: ignore[index]
