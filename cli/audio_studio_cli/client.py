"""HTTP calls to the server, and how each failure becomes one line on stderr and a documented exit code."""

from __future__ import annotations

import importlib.metadata
from types import TracebackType
from typing import Any

import httpx

EXIT_OK = 0
EXIT_FAILED = 1  # a server fault (5xx) or anything else unexpected
EXIT_BAD_INPUT = 2  # the server refused the request (4xx) or a local usage error
EXIT_UNAVAILABLE = 3  # not reachable, overloaded (503, 429) or too slow: worth retrying later
EXIT_CANCELLED = 130  # Ctrl-C, as shells report SIGINT

# A refused connection fails at once; an unroutable address should not hold the user for the whole --timeout.
CONNECT_TIMEOUT_S = 10.0


def cli_version() -> str:
    try:
        return importlib.metadata.version("audio-studio")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout (PYTHONPATH=cli)
        return "dev"


class CliError(Exception):
    """A failure reported as one line on stderr, with the exit code it maps to."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(status: int) -> int:
    if status in (429, 503):
        return EXIT_UNAVAILABLE
    if 400 <= status < 500:
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def error_from_response(response: httpx.Response) -> CliError:
    """The server's own `error` line (it names the field and the limit); the bare status when the body is not ours."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip():
        message = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    elif response.status_code >= 500 or response.status_code == 429:
        message = f"{message} (HTTP {response.status_code})"
    retry_after = response.headers.get("retry-after")
    if retry_after and exit_code_for(response.status_code) == EXIT_UNAVAILABLE:
        message = f"{message}; retry after {retry_after} s"
    return CliError(message, exit_code_for(response.status_code))


class Client:
    """One server: its URL, the optional API key, and the timeout for a whole answer."""

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise CliError(f"--url {url!r} must start with http:// or https://", EXIT_BAD_INPUT)
        if timeout <= 0:
            raise CliError(f"--timeout must be positive, not {timeout:g}", EXIT_BAD_INPUT)
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": f"audio-studio-cli/{cli_version()}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        # Closing the connection is what tells the server to drop the work of a cancelled request.
        self._http.close()

    def post(self, route: str, **kwargs: Any) -> httpx.Response:
        """POST and return a 2xx answer; anything else raises CliError."""
        return self.request("POST", route, **kwargs)

    def get(self, route: str) -> httpx.Response:
        return self.request("GET", route)

    def request(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        """Send and return a 2xx answer; anything else raises CliError."""
        try:
            response = self._http.request(method, route, **kwargs)
        except httpx.ConnectError as error:
            raise CliError(
                f"cannot reach {self.url}: {error} (is the server running? see --url / AUDIO_STUDIO_URL)",
                EXIT_UNAVAILABLE,
            ) from None
        except httpx.TimeoutException:
            raise CliError(
                f"no answer from {self.url} within {self.timeout:g} s (--timeout)", EXIT_UNAVAILABLE
            ) from None
        except httpx.TransportError as error:
            raise CliError(
                f"connection to {self.url} failed: {error or type(error).__name__}", EXIT_UNAVAILABLE
            ) from None
        if response.is_error:
            raise error_from_response(response)
        return response
