"""The published API contract: BentoML's generated OpenAPI document, made a valid OpenAPI 3.1.0 document.

BentoML 1.4.39 builds `/docs.json` from the API signatures (so from the pydantic models in
schemas.py), but what it serves says `openapi: 3.0.2` while holding Swagger 2.0 `type: file`,
JSON Schema 2020-12 keywords (`type: 'null'`, numeric `exclusiveMinimum`) and a non-`x-` key
`root_input`; its inline copies of the models drop nullability (critique's `preset`); every POST
lists 200/400/404/500 only, with a 400 body whose `detail` is a string; file responses name one
media type and none of their headers; `info` is BentoML's boilerplate. Validators reject it and
client generators fail on it.

`published_openapi` keeps BentoML's output as the one source of the fields, defaults and bounds,
and fixes only what is wrong: it declares 3.1.0 (whose JSON Schema dialect is what pydantic
writes), points request and response bodies at the components pydantic wrote, turns file fields
into `{"type": "string", "format": "binary"}` (an optional single file where BentoML has a list of
at most one), declares every error status a route answers with `core.errors.ErrorResponse`, the
audio media types and provenance headers of file responses, request examples, and the plain-text
infrastructure routes. What BentoML cannot see (the mounted job routes) is documented by the fragments the
service passes in (`Fragment`: service.py passes jobs/openapi.py's). `OpenAPIDocument` serves the result at
`/docs.json` (Swagger UI at `/` reads it from there).
"""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
import json
import logging
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.errors import STATUS_OF_KIND, ErrorResponse
from front.access import OpenPaths
from front.families import document_models
from schemas import AudioFormat

logger = logging.getLogger("bentoml.audio_studio")

OPENAPI_VERSION = "3.1.0"
TITLE = "audio-studio"
DESCRIPTION = (
    "Text-to-audio and audio-to-audio with AudioLDM2 (16 kHz mono WAV or FLAC, best of up to 4 candidates "
    "ranked by CLAP score), and music critique with Music Flamingo (a recording, optionally a reference, and a "
    "question or preset in; text out). File routes answer with the audio itself and its provenance in `X-` "
    "headers; `/json` routes answer with every waveform base64-encoded. Every error answer has the body "
    "`ErrorResponse`; 503 answers carry `Retry-After`."
)
PACKAGE = "audio-studio"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

SCHEMA_REF = "#/components/schemas/{}"
ERROR_SCHEMA = "ErrorResponse"
BENTOML_ERROR_SCHEMAS = ("InvalidArgument", "NotFound", "InternalServerError")
BENTOML_SUFFIX = "IODescriptor"  # BentoML's name for the model it wraps around each API's input and output
BINARY = {"type": "string", "format": "binary"}
PLAIN_TEXT = {"text/plain": {"schema": {"type": "string"}}}

ERROR_STATUSES = (400, 408, 413, 415, 500, 503)
KEYED_ERROR_STATUSES = (401, 429)  # with API keys on
RETRY_AFTER_STATUSES = (429, 503)
SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "An API key as a Bearer token."},
    "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key."},
}
KEYED = [{"bearerKey": []}, {"headerKey": []}]
FORM_MEDIA_TYPE = "multipart/form-data"
EVENT_STREAM = "text/event-stream"
# Routes that answer an event stream when asked (`stream: true` or `Accept: text/event-stream`), and how.
STREAMED_ROUTES = {
    "/critique": "The critique as JSON; or, streamed, `text/event-stream`: `delta` events (data: "
    '`{"text": <text since the last delta>, "tokens": <tokens so far>}`) while it is written, then one `result` '
    "event (data: this CritiqueResponse JSON) or one `error` event (data: the ErrorResponse with its `status`). "
    "Errors found before the model runs are answered as plain JSON errors, not streamed.",
}
# Documents routes BentoML cannot see, given the document, its component schemas and whether keys are on.
Fragment = Callable[[dict[str, Any], dict[str, Any], bool], None]


def error_description(status: int, form: bool) -> str:
    """What a route's error status means; the `kind`s come from core.errors, as the server sends them."""
    kinds = ", ".join(f"`{kind}`" for kind, code in STATUS_OF_KIND.items() if code == status)
    meaning = {
        400: "Invalid input: a field missing, unknown or out of range, or a malformed body. `detail` has one "
        "entry per field at fault, naming it (`loc`) and the limit (`msg`).",
        401: "No API key, or one that is not (or no longer) valid; the answer carries `WWW-Authenticate`.",
        408: "The body came too slowly (`AUDIO_STUDIO_BODY_TIMEOUT_S`, `AUDIO_STUDIO_BODY_MIN_RATE_KIB_S`); "
        "the connection is closed.",
        413: "The body, or an upload in it, is over its size limit.",
        415: (
            "The body is neither `multipart/form-data` nor `application/x-www-form-urlencoded`, or an upload is "
            "not audio in an accepted container "
            "(each file field lists them)."
            if form
            else "The body is not `application/json`."
        ),
        429: "This API key has too many requests in flight, or is over its rate. Retry after `Retry-After` seconds.",
        500: "The model produced non-finite output for this request, or the service failed.",
        503: "A runner is unavailable or restarting, its queue is full, or the request ran out of accelerator "
        "memory even alone. Retry after `Retry-After` seconds.",
    }[status]
    return f"{meaning} (`kind`: {kinds})" if kinds else meaning


# Request examples per route and body media type. Tests check each against its schema, so a renamed field fails.
GENERATE_EXAMPLE = {
    "prompt": "Techno music with a strong, upbeat tempo and high melodic riffs",
    "duration": 5,
    "steps": 25,
    "num_waveforms": 2,
    "seed": 42,
    "format": "wav",
}
TRANSFORM_EXAMPLE = {"prompt": "a jazz drum kit played with brushes", "strength": 0.6, "seed": 7, "format": "wav"}
INPAINT_EXAMPLE = {"mode": "inpaint", "start_s": 3.5, "end_s": 6, "prompt": "a clean snare hit", "seed": 7}
EXTEND_EXAMPLE = {"mode": "extend", "seconds": 20, "side": "end", "prompt": "the groove goes on", "seed": 7}
EDIT_EXAMPLES = {
    "inpaint": {"summary": "Regenerate 3.5-6 s of the `audio` file part", "value": INPAINT_EXAMPLE},
    "extend": {"summary": "Add 20 s after the `audio` file part", "value": EXTEND_EXAMPLE},
}
EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "/generate": {"generate": {"summary": "Five seconds, best of two candidates", "value": GENERATE_EXAMPLE}},
    "/generate/json": {"generate": {"summary": "Five seconds, both candidates back", "value": GENERATE_EXAMPLE}},
    "/transform": {"transform": {"summary": "Text fields beside the `audio` file part", "value": TRANSFORM_EXAMPLE}},
    "/transform/json": {
        "transform": {"summary": "Text fields beside the `audio` file part", "value": TRANSFORM_EXAMPLE}
    },
    "/edit": EDIT_EXAMPLES,
    "/edit/json": EDIT_EXAMPLES,
    "/critique": {
        "question": {"summary": "A question alone, no upload", "value": {"prompt": "What makes a good vibrato?"}},
        "feedback": {
            "summary": "Teaching feedback on an `audio` file part, sampled",
            "value": {"preset": "feedback", "do_sample": True, "temperature": 0.7, "seed": 3},
        },
        "compare": {"summary": "Compare `audio` with a `reference` file part", "value": {"preset": "compare"}},
    },
    "/v1/chat/completions": {
        "question": {
            "summary": "A question in OpenAI's chat format (audio goes in `input_audio` parts, base64)",
            "value": {
                "model": "music-flamingo",
                "messages": [{"role": "user", "content": "What makes a good vibrato?"}],
                "max_tokens": 64,
                "seed": 1,
            },
        }
    },
    "/v1/audio/generate": {
        "rain": {
            "summary": "Five seconds of rain, as vLLM-Omni's route takes it",
            "value": {"input": "rain on a tin roof", "audio_length": 5, "seed": 42},
        }
    },
}

# Provenance headers of the file responses (service.audio_file_response): name, meaning, always sent, and the
# component property whose schema the value has.
FILE_HEADERS = (
    (
        "X-Seed",
        "Seed of this waveform: this request with it and `num_waveforms=1` regenerates it.",
        True,
        "GenerateRequest.seed",
    ),
    ("X-Model-Id", "Checkpoint that produced the audio.", True, "Provenance.model_id"),
    ("X-Profile", "`tiny` and `random` mean random weights: not real audio.", True, "Provenance.profile"),
    ("X-Sample-Rate", "Sample rate of the audio in Hz.", True, "GenerateResponse.sample_rate"),
    (
        "X-Clap-Score",
        "CLAP text-audio similarity; sent when candidates were ranked.",
        False,
        "GeneratedWaveform.clap_score",
    ),
    (
        "X-Critic-Score",
        "Music Flamingo's 1-10 score of this waveform; sent with `rank_by: critic`.",
        False,
        "GeneratedWaveform.critic_score",
    ),
    ("X-Edit-Start", "/edit: where the regenerated range starts, seconds into the output.", False, "EditSpan.start_s"),
    ("X-Edit-End", "/edit: where the regenerated range ends, seconds into the output.", False, "EditSpan.end_s"),
)


def value_schema(schemas: dict[str, Any], dotted: str) -> dict[str, Any]:
    """A component property's schema as a bare value: the non-null branch, without its annotations."""
    model, prop = dotted.split(".")
    schema = schemas[model]["properties"][prop]
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    assert len(branches) == 1, f"expected one non-null branch in {dotted}: {schema}"
    return {k: v for k, v in branches[0].items() if k not in ("default", "title", "description", "examples")}


def published_openapi(
    raw: dict[str, Any], version: str, open_paths: OpenPaths | None = None, fragments: Sequence[Fragment] = ()
) -> dict[str, Any]:
    """BentoML's `service.openapi_spec.asdict()` as a valid OpenAPI 3.1.0 document; `raw` is not changed.

    With `open_paths` (API keys on), every other route requires a key and may answer 401 and 429. Each of
    `fragments` then adds or completes its routes.
    """
    doc = copy.deepcopy(raw)
    doc["openapi"] = OPENAPI_VERSION
    doc["info"] = {"title": TITLE, "version": version, "description": DESCRIPTION}
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    rename_components(doc, schemas)
    for name in BENTOML_ERROR_SCHEMAS:
        schemas.pop(name, None)
    error_schema = ErrorResponse.model_json_schema(ref_template=SCHEMA_REF.replace("{}", "{model}"))
    schemas.update(error_schema.pop("$defs", {}))
    schemas[ERROR_SCHEMA] = error_schema
    document_models(doc, schemas)
    for name in list(schemas):
        schemas[name] = fix_schema(schemas[name])
    keyed = open_paths is not None
    if keyed:
        doc["components"]["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
        doc["security"] = copy.deepcopy(KEYED)
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            if method == "post":
                fix_post(path, operation, schemas, keyed)
            elif method == "get":
                fix_get(path, operation)
            if keyed and path in open_paths:
                operation["security"] = []
    for fragment in fragments:
        fragment(doc, schemas, keyed)
    drop_unreferenced(doc, schemas)
    return doc


def rename_components(doc: dict[str, Any], schemas: dict[str, Any]) -> None:
    """`GenerateRequestIODescriptor` -> `GenerateRequest`: the model's own name, for client class names."""
    renames = {}
    for name in list(schemas):
        short = name.removesuffix(BENTOML_SUFFIX)
        if short != name and short and short not in schemas:
            schemas[short] = schemas.pop(name)
            schemas[short]["title"] = short
            renames[SCHEMA_REF.format(name)] = SCHEMA_REF.format(short)

    old_titles = {ref.rsplit("/", 1)[1] + BENTOML_SUFFIX for ref in renames.values()}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("$ref") in renames:
                node["$ref"] = renames[node["$ref"]]
            title = node.get("title")  # a string, or a property named `title` (ModelFamily's)
            if isinstance(title, str) and title in old_titles:  # BentoML's inline copies of the same models
                node["title"] = node["title"].removesuffix(BENTOML_SUFFIX)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


def fix_schema(node: Any) -> Any:
    """Swagger 2.0 and OpenAPI 3.0 leftovers in a schema, rewritten to JSON Schema 2020-12 (OpenAPI 3.1)."""
    if isinstance(node, list):
        return [fix_schema(value) for value in node]
    if not isinstance(node, dict):
        return node
    node = {key: fix_schema(value) for key, value in node.items()}
    if node.get("type") == "file":  # Swagger 2.0's file type
        node["type"] = "string"
        node["format"] = "binary"
    if "root_input" in node:  # BentoML's marker; extensions must start with `x-`
        node["x-bentoml-root-input"] = node.pop("root_input")
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), bool) and node.pop(bound) and limit in node:  # 3.0's form: 3.1 wants the number
            node[bound] = node.pop(limit)
    if node.pop("nullable", False) is True and "type" in node:  # 3.0's nullable
        node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else [*node["type"], "null"]
    return node


def is_binary(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "string" and schema.get("format") == "binary"


def single_file_fields(schema: dict[str, Any]) -> None:
    """A file list of at most one (BentoML cannot take an optional file, so the models use one) -> one file."""
    for name, prop in schema.get("properties", {}).items():
        if prop.get("type") == "array" and is_binary(prop.get("items", {})) and prop.get("maxItems") == 1:
            kept = {k: v for k, v in prop.items() if k in ("title", "description")}
            schema["properties"][name] = {**kept, **BINARY}


def component_ref(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """BentoML's inline copy of a model (which loses nullability) -> a reference to the model pydantic wrote."""
    title = schema.get("title")
    if title in schemas and "$ref" not in schema:
        return {"$ref": SCHEMA_REF.format(title)}
    return fix_schema(schema)


def resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return schemas[ref.rsplit("/", 1)[1]] if ref.startswith(SCHEMA_REF.format("")) else schema


def fix_post(path: str, operation: dict[str, Any], schemas: dict[str, Any], keyed: bool) -> None:
    if "description" in operation:  # the API's docstring, as indented in the source
        operation["description"] = inspect.cleandoc(operation["description"])
    body = operation.get("requestBody", {})
    body["required"] = True
    form = False
    for media_type, media in body.get("content", {}).items():
        media["schema"] = component_ref(media["schema"], schemas)
        model = resolve(media["schema"], schemas)
        if media_type == FORM_MEDIA_TYPE:
            form = True
            single_file_fields(model)
            # Text parts are plain text (compat/bentoml_multipart.py keeps them as text; curl -F sends them so); file
            # parts are any bytes, read by their content. The defaults say exactly that.
            media.pop("encoding", None)
        examples = EXAMPLES.get(path)
        if examples:
            media["examples"] = copy.deepcopy(examples)

    responses = operation["responses"] = {str(code): r for code, r in operation.get("responses", {}).items()}
    responses.pop("404", None)  # the route exists: BentoML answers 404 for other paths only
    ok = responses.get("200", {})
    content = ok.get("content", {})
    if any(media_type.startswith("audio/") for media_type in content):
        formats = [AudioFormat(value) for value in schemas["AudioFormat"]["enum"]]
        ok["description"] = "The audio file (the best-ranked waveform) in the requested `format`."
        ok["content"] = {fmt.media_type: {"schema": dict(BINARY)} for fmt in formats}
        ok["headers"] = {
            "Content-Disposition": {
                "description": "`attachment` with a file name holding the seed and format.",
                "schema": {"type": "string"},
            },
            **{
                name: {"description": text, "required": required, "schema": value_schema(schemas, source)}
                for name, text, required, source in FILE_HEADERS
            },
        }
    else:
        for media in content.values():
            media["schema"] = component_ref(media["schema"], schemas)
    if path in STREAMED_ROUTES:
        ok["description"] = STREAMED_ROUTES[path]
        content[EVENT_STREAM] = {"schema": {"type": "string"}}
    for status in ERROR_STATUSES + (KEYED_ERROR_STATUSES if keyed else ()):
        response: dict[str, Any] = {
            "description": error_description(status, form),
            "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(ERROR_SCHEMA)}}},
        }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"description": "`Bearer`.", "required": True, "schema": {"type": "string"}}
            }
        if status in RETRY_AFTER_STATUSES:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
        responses[str(status)] = response
    operation["responses"] = dict(sorted(responses.items()))


def fix_get(path: str, operation: dict[str, Any]) -> None:
    """Infrastructure routes answer plain text; /readyz answers 503 until every runner is ready."""
    responses = operation["responses"] = {str(code): r for code, r in operation.get("responses", {}).items()}
    for response in responses.values():
        response.setdefault("content", copy.deepcopy(PLAIN_TEXT))
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name == "readyz":
        responses["503"] = {
            "description": "Not ready: a runner has not loaded its model yet, or does not answer.",
            "content": copy.deepcopy(PLAIN_TEXT),
        }
    elif name == "metrics":
        responses["200"]["description"] = "Prometheus text exposition format."
    elif name == "healthz":
        operation["deprecated"] = True


def drop_unreferenced(doc: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Components no route reaches (BentoML's task status model, its old error models) are left out."""
    reached: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(SCHEMA_REF.format("")):
                name = ref.rsplit("/", 1)[1]
                if name in schemas and name not in reached:
                    reached.add(name)
                    walk(schemas[name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc.get("paths", {}))
    for name in list(schemas):
        if name not in reached:
            del schemas[name]


def package_version() -> str:
    """The project's version: pyproject.toml's [project] version in a checkout, else the installed metadata."""
    try:
        return tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class OpenAPIDocument:
    """ASGI middleware: `GET /docs.json` answers the published document (built once); all else passes through."""

    def __init__(
        self,
        app: Any,
        service: Any,
        open_paths: OpenPaths | None,
        version: str | None = None,
        fragments: Sequence[Fragment] = (),
    ) -> None:
        self.app = app
        self.service = service
        self.open_paths = open_paths
        self.fragments = fragments
        self.version = version or package_version()
        prefix = getattr(service, "path_prefix", None) or ""
        self.path = "/" + "/".join(part for part in (*prefix.split("/"), "docs.json") if part)
        self._body: bytes | None = None

    def body(self) -> bytes:
        if self._body is None:
            raw = self.service.openapi_spec.asdict()
            document = published_openapi(raw, self.version, self.open_paths, self.fragments)
            self._body = json.dumps(document, ensure_ascii=False).encode()
        return self._body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        try:
            body = self.body()
        except Exception:  # BentoML's own document is still better than none
            logger.exception("could not build the published OpenAPI document; serving BentoML's")
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
