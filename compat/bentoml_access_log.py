"""A value a client chose cannot write a log line of its own: control characters in logged values are escaped.

What it changes: the process's log record factory (`logging.setLogRecordFactory`, chained to the factory set
before) escapes control characters (C0 and C1, DEL, the Unicode line and paragraph separators) in the string
arguments of every record, and in a message that is not a string (an exception logged as is): a line feed is
logged as `\\n`, an escape as `\\x1b`. Message templates are the code's own and keep their line breaks;
tracebacks are formatted later and are left as they are.

Why: BentoML's access log (`bentoml._internal.server.http.access.AccessLogMiddleware`, outside every
middleware of ours) and its `log_exception` (`bentoml._internal.server.http_app`) log the request's path, which
the server has already percent-decoded, as an argument: `GET /generate%0a2026-12-04T00:00:00+0000 [INFO] API
keys loaded: ...` wrote a line of its own into the front's log, before any key was checked. A record factory
covers those records, ours (front/access.py logs a refused request's path) and any later one, in every process,
whatever handlers BentoML's logging configuration installs. A filter that rewrites a record's arguments after
it was made (compat/bentoml_request_log.py) escapes them with `escaped_args`. No upstream issue. Checked range:
`bentoml/_internal/server/http/access.py`, `http_app.py` and `_bentoml_impl/server/app.py` are the same in the
1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from compat import Patch

PATCH = Patch(
    name="bentoml_access_log",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML's access log writes the request's decoded path, line breaks included, into the log",
)

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escaped(text: str) -> str:
    return CONTROL.sub(_escape, text)


def _escaped_value(value: Any) -> Any:
    if isinstance(value, str):
        return escaped(value)
    if isinstance(value, BaseException):  # its text may quote what the client sent
        return escaped(str(value))
    return value


def escaped_args(args: Any) -> Any:
    """A record's `args` (a tuple, or one mapping) with every string in it escaped."""
    if isinstance(args, Mapping):
        return {key: _escaped_value(value) for key, value in args.items()}
    if isinstance(args, tuple):
        return tuple(_escaped_value(value) for value in args)
    return args


def escaping_factory(make: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if record.args:
            record.args = escaped_args(record.args)
        elif not isinstance(record.msg, str):
            record.msg = escaped(str(record.msg))
        return record

    factory.escapes = True  # type: ignore[attr-defined]
    return factory


def install() -> None:
    current = logging.getLogRecordFactory()
    if not getattr(current, "escapes", False):
        logging.setLogRecordFactory(escaping_factory(current))
