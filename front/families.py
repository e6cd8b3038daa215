"""Which model family a request runs on: refusals for families this deployment does not run or that cannot do
what was asked, and GET /models, which lists what it runs. All of it from the registry (registry.py)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.errors import error_response
from registry import FAMILIES, Family, Feature
from schemas import ModelsResponse, deployed_families

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
            f"{seconds_field} must be at most {family.max_seconds:g} s with model {model!r} (one latent)",
            field=seconds_field,
        )
    return None


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(deployed_families().model_dump(mode="json"))


def models_app() -> Starlette:
    """GET /models: the families this deployment runs, with their checkpoints, limits and features."""
    return Starlette(routes=[Route("/", list_models, methods=["GET"])])


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
