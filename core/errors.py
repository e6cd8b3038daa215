"""One error shape for every 4xx/5xx the public API answers, and the helper that builds it (for the front's
routes and middlewares and the job API's routes alike)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

ErrorKind = Literal[
    "invalid_input",  # 400: a field out of range, a malformed body or form
    "unauthorized",  # 401: no API key, or one that is not (or no longer) valid
    "not_found",  # 404: no such job (or not this API key's), no such path
    "method_not_allowed",  # 405: the path takes other methods (`Allow` lists them)
    "request_timeout",  # 408: the body came too slowly (its deadline and minimum rate: front/body_pace.py)
    "conflict",  # 409: the job has no result (yet, or it failed or was cancelled)
    "gone",  # 410: the job's result passed its retention time
    "too_large",  # 413: the body or an upload over its limit
    "unsupported_media_type",  # 415: wrong Content-Type, or an upload that is not accepted audio
    "rate_limited",  # 429 + Retry-After: this API key is over its rate or its requests in flight
    "non_finite",  # 500: the model produced NaN/Inf for this request
    "internal",  # 500: a fault in the service; the message never carries server paths
    "unavailable",  # 503 + Retry-After: a runner is down or restarting, or its queue is full
    "out_of_memory",  # 503 + Retry-After: the request ran out of accelerator memory even alone
]


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is: the field name (and index for lists).")
    msg: str = Field(description="What is wrong, with the limit where there is one.")
    type: str = Field(description="A machine-readable code, e.g. `less_than_equal` or `invalid_input`.")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="One line for people: the field and the problem.")
    kind: ErrorKind = Field(description="A machine-readable class of error.")
    detail: list[ErrorDetail] = Field([], description="One entry per field at fault (empty when none is).")


STATUS_OF_KIND: dict[str, int] = {
    "invalid_input": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "conflict": 409,
    "gone": 410,
    "too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "non_finite": 500,
    "internal": 500,
    "unavailable": 503,
    "out_of_memory": 503,
}
RETRY_AFTER_SECONDS = {"unavailable": 5, "out_of_memory": 10}
KIND_OF_STATUS: dict[int, ErrorKind] = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def kind_of_status(status: int) -> ErrorKind:
    """The kind for an error status that came without one (BentoML's own answers, upload refusals)."""
    return KIND_OF_STATUS.get(status, "internal" if status >= 500 else "invalid_input")


def error_response(
    kind: ErrorKind,
    message: str,
    field: str | None = None,
    retry_after_s: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error answer; with `field`, the message is prefixed by it and `detail` names it.

    Retry-After is the kind's default unless `retry_after_s` says better (a rate limit knows when it refills).
    """
    detail = [ErrorDetail(loc=[field], msg=message, type=kind)] if field else []
    body = ErrorResponse(error=f"{field}: {message}" if field else message, kind=kind, detail=detail)
    retry = retry_after_s or RETRY_AFTER_SECONDS.get(kind)
    all_headers = {**(headers or {}), **({"Retry-After": str(retry)} if retry else {})}
    return JSONResponse(body.model_dump(), status_code=STATUS_OF_KIND[kind], headers=all_headers or None)
