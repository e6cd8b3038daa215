"""GET /v1/models (and /v1/models/{id}): what `model` takes on the /v1 routes, in OpenAI's list shape, from the
registry and the settings (front/families.py answers GET /models the native way)."""

from __future__ import annotations

import copy
import time
from typing import Any

from core.errors import error_response
from front.asgi import Receive, Scope, Send, reply
from front.openai_api.audio import generation_model_ids
from front.openai_api.chat import chat_model_ids
from front.openai_api.errors import OpenAIError
from front.openai_api.protocol import AUDIO_GENERATE, CHAT_COMPLETIONS, MODELS, ModelCard, ModelList
from registry import MUSIC_FLAMINGO

STARTED = int(time.time())


def model_list() -> ModelList:
    chat = [(model_id, MUSIC_FLAMINGO.settings.checkpoint) for model_id in chat_model_ids()]
    generation = [(model_id, family) for model_id, family in generation_model_ids().items()]
    return ModelList(
        data=[
            ModelCard(id=model_id, created=STARTED, owned_by=root.split("/")[0] if "/" in root else "audio-studio",
                      root=root)
            for model_id, root in chat + generation
        ]
    )  # fmt: skip


class OpenAIModelsRoute:
    """ASGI middleware: answers GET /v1/models and /v1/models/{id}; all else passes through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.models = model_list()
        self.cards = {card.id: card for card in self.models.data}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not path.startswith(MODELS):
            return await self.app(scope, receive, send)
        name = path.removeprefix(MODELS).removeprefix("/")
        if path == MODELS:
            body = self.models.model_dump_json().encode()
        elif name in self.cards:
            body = self.cards[name].model_dump_json().encode()
        else:
            return await reply(send, error_response("not_found", f"the model {name!r} is not served here", "model"))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})


def document_openai(doc: dict[str, Any], schemas: dict[str, Any], keyed: bool) -> None:
    """The OpenAPI document's /v1 part: OpenAI's error shape on the /v1 routes, the chat route's event stream,
    and GET /v1/models."""
    ref = "#/components/schemas/{model}"
    for model in (OpenAIError, ModelList, ModelCard):
        schema = model.model_json_schema(ref_template=ref)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    error_content = {"application/json": {"schema": {"$ref": ref.format(model="OpenAIError")}}}
    paths = doc.setdefault("paths", {})
    for path in (CHAT_COMPLETIONS, AUDIO_GENERATE):
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        operation["tags"] = ["OpenAI-compatible"]
        responses = operation["responses"]
        responses["404"] = {"description": "The `model` is not served here (`code`: `model_not_found`)."}
        for code, response in responses.items():
            if int(code) >= 400:
                response["content"] = copy.deepcopy(error_content)
        operation["responses"] = dict(sorted(responses.items()))
    chat = paths.get(CHAT_COMPLETIONS, {}).get("post")
    if chat is not None:
        ok = chat["responses"]["200"]
        ok["description"] = (
            "A chat.completion; with `stream: true`, `text/event-stream` of `data:` lines, each a "
            "chat.completion.chunk (the last with `usage` when `stream_options.include_usage`), then `data: [DONE]`."
        )
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    listing = {
        "description": "The model ids the /v1 routes take.",
        "content": {"application/json": {"schema": {"$ref": ref.format(model="ModelList")}}},
    }
    one = {
        "description": "One model id.",
        "content": {"application/json": {"schema": {"$ref": ref.format(model="ModelCard")}}},
    }
    missing = {"description": "No such model (`code`: `not_found`).", "content": copy.deepcopy(error_content)}
    paths[MODELS] = {
        "get": {"operationId": "openai_list_models", "tags": ["OpenAI-compatible"], "responses": {"200": listing}}
    }
    paths[MODELS + "/{model}"] = {
        "get": {
            "operationId": "openai_retrieve_model",
            "tags": ["OpenAI-compatible"],
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": one, "404": missing},
        }
    }
