"""Which model family a request runs on: refusals for families this deployment does not run or that cannot do
what was asked, and GET /models, which lists what it runs. All of it from the registry (registry.py)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from core.errors import error_response
from registry import AUDIOLDM2, FAMILIES, Family, Feature
from schemas import MAX_AUDIO_SECONDS, ModelFamily, ModelsResponse
from settings import SETTINGS

FAMILY_OF: dict[str, Family] = {family.name: family for family in FAMILIES}


def family_refusal(model: str, feature: Feature, seconds: float, seconds_field: str) -> JSONResponse | None:
    """The 400 for `model` when this deployment does not run it, it cannot do `feature`, or `seconds` (the
    request's `seconds_field`) is past its limit; None when the family can take the request."""
    family = FAMILY_OF[model]
    able = [f.name for f in FAMILIES if f.deployed and feature in f.features]
    if not family.deployed or feature not in family.features:
        why = "is not deployed here" if not family.deployed else f"does not support {feature}"
        return error_response("invalid_input", f"model {model!r} {why}; choices: {', '.join(able)}", field="model")
    if family.max_seconds is not None and seconds > family.max_seconds:
        return error_response(
            "invalid_input",
            f"{seconds_field} must be at most {family.max_seconds:g} s with model {model!r}",
            field=seconds_field,
        )
    return None


def deployed_families() -> ModelsResponse:
    """The answer of GET /models: built from the registry and the settings, never from the runners."""
    return ModelsResponse(
        models=[
            ModelFamily(
                name=family.name,
                title=family.title,
                checkpoint=family.settings.checkpoint,
                checkpoints=list(family.checkpoints),
                profile=SETTINGS.profile.value,
                features=sorted(family.features),
                max_seconds=family.max_seconds or (MAX_AUDIO_SECONDS if "generate" in family.features else None),
                sample_rate=family.sample_rate,
                default=family is AUDIOLDM2,
            )
            for family in FAMILIES
            if family.deployed
        ]
    )


class ModelsRoute:
    """ASGI middleware: `GET /models` answers the deployed families (they never change while it runs); all else
    passes through. A middleware rather than a mounted app, whose path would answer only with a trailing slash."""

    PATH = "/models"

    def __init__(self, app: Any) -> None:
        self.app = app
        self.body = deployed_families().model_dump_json().encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body if scope["method"] == "GET" else b""})


def document_models(doc: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Add GET /models and its schemas to the published OpenAPI document (front/openapi.py)."""
    schema = ModelsResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas["ModelsResponse"] = schema
    doc.setdefault("paths", {})["/models"] = {
        "get": {
            "operationId": "list_models",
            "tags": ["Service"],
            "description": "The model families this deployment runs, with their checkpoints, limits and features; "
            "the values `model` takes on /generate and /transform.",
            "responses": {
                "200": {
                    "description": "The deployed families.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelsResponse"}}},
                }
            },
        }
    }
