"""Client mistakes are logged as one line, not as server errors.

BentoML logs every rejected request with a full traceback at ERROR (its
`log_exception`), so a client sending `duration=31` in a loop fills the log
with stack traces that look like faults of the service. Validation errors and
clients that leave mid-upload become one INFO line naming the route and the
fields; real faults keep their traceback.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from starlette.requests import ClientDisconnect

BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"


class ClientErrorsAsOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            fields = ", ".join(".".join(map(str, e["loc"])) or "body" for e in error.errors())
            summary = f"invalid request ({fields})"
        elif isinstance(error, ClientDisconnect):
            summary = "client disconnected during the upload"
        else:
            return True
        path, method = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
        record.msg, record.args = "%s %s: %s", (method, path, summary)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    logging.getLogger(BENTOML_REQUEST_LOGGER).addFilter(ClientErrorsAsOneLine())
