"""What the server said when it refused or failed: its error body (`kind`, the one-line `error`, the field at
fault) and its `Retry-After`, as exceptions a program can branch on."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """An error answer (4xx/5xx), or a server that could not be reached (`status` None, `kind` "unreachable").

    `kind` is the server's machine-readable class (docs/api.md, Errors and limits), `field` the request field at
    fault when one is, `retry_after` the seconds the server asked to wait (429, 503).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: str = "internal",
        field: str | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.field = field
        self.retry_after = retry_after
        self.body = body or {}

    @property
    def retryable(self) -> bool:
        """Worth sending again later: overloaded, restarting or unreachable, not refused."""
        return self.kind == "unreachable" or self.status in (429, 503)

    @classmethod
    def from_body(cls, body: Any, status: int, retry_after: str | None = None, reason: str = "") -> ApiError:
        """From the server's error body; a body that is not ours (a proxy's page) gives the bare status."""
        seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            kind = "internal" if status >= 500 else "invalid_input"
            return cls(f"HTTP {status} {reason}".rstrip(), status=status, kind=kind, retry_after=seconds)
        detail = body.get("detail") or []
        loc = detail[0].get("loc") if detail and isinstance(detail[0], dict) else None
        field = ".".join(str(part) for part in loc) if loc else None
        return cls(
            body["error"], status=status, kind=str(body.get("kind", "internal")), field=field,
            retry_after=seconds, body=body,
        )  # fmt: skip

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        return cls.from_body(body, response.status_code, response.headers.get("retry-after"), response.reason_phrase)


class ServerUnreachable(ApiError):
    """No answer: refused connection, timeout, or a dropped connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="unreachable")


class JobFailed(ApiError):
    """The job ended `failed`: the error the synchronous route would have answered, and the job's last status."""

    def __init__(self, error: ApiError, job: Any) -> None:
        super().__init__(
            error.message, status=error.status, kind=error.kind, field=error.field,
            retry_after=error.retry_after, body=error.body,
        )  # fmt: skip
        self.job = job


class JobCancelled(ApiError):
    """The job ended `cancelled` (by this client or another one holding its id)."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {job.id} was cancelled", kind="cancelled")
        self.job = job
