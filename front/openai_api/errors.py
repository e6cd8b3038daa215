"""OpenAI's error shape for every error answer under /v1 (`{"error": {"message", "type", "param", "code"}}`).

The front builds every error in its one shape (core/errors.py), whichever layer answers (keys, admission, the
edge, validation, the runner). This middleware, outermost, rewrites those under /v1 into OpenAI's, so the SDKs
raise their matching exceptions and read the message; the status, Retry-After and the limits stay the native ones.
`code` is the native `kind`; `param` names the request field as the OpenAI request names it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from core.errors import ErrorKind, error_response
from front.asgi import Message, Receive, Scope, Send
from front.openai_api.protocol import AUDIO_GENERATE, CHAT_COMPLETIONS

PREFIX = "/v1/"
TYPE_OF_STATUS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
# The runner's and the native request's names for what the OpenAI requests call otherwise.
PARAM_OF_FIELD = {
    CHAT_COMPLETIONS: {
        "json_schema": "response_format",
        "max_new_tokens": "max_tokens",
        "prompt": "messages",
        "audio": "messages",
        "reference": "messages",
    },
    AUDIO_GENERATE: {
        "prompt": "input",
        "duration": "audio_length",
        "steps": "num_inference_steps",
        "format": "response_format",
    },
}


class Refusal(Exception):
    """A request a /v1 route cannot serve, with the field (as the OpenAI request names it) at fault."""

    def __init__(self, param: str, message: str, kind: ErrorKind = "invalid_input") -> None:
        super().__init__(message)
        self.param, self.message, self.kind = param, message, kind

    def response(self) -> JSONResponse:
        """In the native shape, as every error is built; OpenAIErrors gives it OpenAI's."""
        return error_response(self.kind, self.message, field=self.param)


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error`, `authentication_error`, `not_found_error`, "
                      "`rate_limit_error` or `server_error`.")  # fmt: skip
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="The native error `kind` (`model_not_found` for an unknown model).")


class OpenAIError(BaseModel):
    """The body of every error answer under /v1."""

    error: OpenAIErrorBody


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return TYPE_OF_STATUS.get(status, "invalid_request_error")


def param_name(location: list[Any]) -> str | None:
    """`["messages", 0, "content"]` as `messages[0].content`."""
    if not location or location == ["body"]:
        return None
    name = ""
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name


def openai_error(status: int, native: dict[str, Any], path: str = "") -> dict[str, Any]:
    """The OpenAI error object for a native error body."""
    detail = native.get("detail") or []
    param = param_name(detail[0].get("loc", [])) if detail and isinstance(detail[0], dict) else None
    if param is not None:
        param = PARAM_OF_FIELD.get(path, {}).get(param, param)
    code = native.get("kind")
    if code == "not_found" and param == "model":
        code = "model_not_found"
    return {"error": {"message": native.get("error", ""), "type": error_type(status), "param": param, "code": code}}


class OpenAIErrors:
    """ASGI middleware: error answers under /v1 in OpenAI's shape; everything else untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        held: Message | None = None
        body = bytearray()

        async def reshaping_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is None:
                return await send(message)
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            try:
                native = json.loads(body)
            except ValueError:
                native = {"error": body.decode(errors="replace")[:200], "kind": None}
            reshaped = json.dumps(openai_error(held["status"], native, scope["path"])).encode()
            headers = [(k, v) for k, v in held["headers"] if k.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(reshaped)).encode())]
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": reshaped})

        await self.app(scope, receive, reshaping_send)
