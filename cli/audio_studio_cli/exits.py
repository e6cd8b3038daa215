"""How each failure becomes one line on stderr and a documented exit code."""

from __future__ import annotations

from audio_studio import ApiError, JobCancelled

EXIT_OK = 0
EXIT_FAILED = 1  # a server fault (5xx), a failed or cancelled job, or anything else unexpected
EXIT_BAD_INPUT = 2  # the server refused the request (4xx) or a local usage error
EXIT_UNAVAILABLE = 3  # not reachable, overloaded (503, 429) or too slow: worth retrying later
EXIT_CANCELLED = 130  # Ctrl-C, as shells report SIGINT


class CliError(Exception):
    """A failure reported as one line on stderr, with the exit code it maps to."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def from_api(error: ApiError) -> CliError:
    """The server's own line (it names the field and the limit), with the status where it helps."""
    status = f" (HTTP {error.status})" if error.status and not error.message.startswith("HTTP ") else ""
    if error.retryable:
        retry = f"; retry after {error.retry_after:g} s" if error.retry_after else ""
        return CliError(f"{error.message}{status}{retry}", EXIT_UNAVAILABLE)
    if isinstance(error, JobCancelled) or error.status is None or error.status >= 500:
        return CliError(f"{error.message}{status}", EXIT_FAILED)
    return CliError(error.message, EXIT_BAD_INPUT)
