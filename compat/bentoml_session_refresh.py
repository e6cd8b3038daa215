"""Runner calls cut by BentoML's session refresh are recognised, so the front can send them again.

What it relies on: BentoML's runner client (`_bentoml_impl/client/proxy2.py`, `SessionManager.get_session`)
replaces its aiohttp session once it is older than `max_age` (300 s) or has served `max_requests` (100) calls,
and closes the old one at once, under the calls still in flight on it. Those calls fail with aiohttp's
`ServerDisconnectedError` (a `ClientConnectionError`, resent like any dropped connection) or with a bare
`RuntimeError("Session is closed")` (aiohttp's `ClientSession._request`), which only its message tells apart
from a fault; `session_closed_under_the_call` matches that message. core/runner_calls.py resends both.

Upstream: bentoml issues 5540 and 5544 (PR 5541 did not change this). Checked range: `proxy2.py` is the same in
the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

from compat import Patch

PATCH = Patch(
    name="bentoml_session_refresh",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML's runner client closes its session under in-flight calls every 100 calls or 300 s",
    upstream="bentoml issues 5540, 5544",
)


def session_closed_under_the_call(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "Session is closed" in str(exc)
