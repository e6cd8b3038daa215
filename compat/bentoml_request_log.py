"""Client mistakes are logged as one line, not as server errors.

What it changes: a filter on BentoML's private request logger (`bentoml._internal.server.http_app`, the module
logger of its `log_exception`, which BentoML's app calls with `(path, method)` and the exception) rewrites the
records of validation errors and clients that left mid-upload into one INFO line naming the route and the
fields (escaped: compat/bentoml_access_log.py); real faults keep their traceback.

Why: BentoML logs every rejected request with a full traceback at ERROR, so a client sending `duration=31` in a
loop fills the log with stack traces that look like faults of the service. No upstream issue. Checked range:
`bentoml/_internal/server/http_app.py` and `_bentoml_impl/server/app.py` are the same in the 1.4.40 wheel as in
1.4.39.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from compat import Patch
from compat.bentoml_access_log import escaped_args

PATCH = Patch(
    name="bentoml_request_log",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML logs every rejected request with a traceback at ERROR",
)

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
        record.msg, record.args = "%s %s: %s", escaped_args((method, path, summary))  # fields a client named
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


FILTER = ClientErrorsAsOneLine()  # one instance: adding it twice leaves one (logging.Filterer.addFilter)


def install() -> None:
    logging.getLogger(BENTOML_REQUEST_LOGGER).addFilter(FILTER)
