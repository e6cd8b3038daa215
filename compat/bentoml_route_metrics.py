"""BentoML's request metrics are labelled by route template, and every path no route has by one value.

What it changes: `bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware`, the middleware
whose `bentoml_api_server_request_*` series (`request_total`, the `request_duration_seconds` histogram,
`request_in_progress`) BentoML's app factory (`_bentoml_impl.server.app.ServiceAppFactory.middlewares`) imports
from that module each time it builds a server's app, is replaced there by a subclass. The stock middleware uses
`scope["path"]` as its `endpoint` label; the subclass hands it a scope whose path is the template of the route the
request matches (`/jobs/{job_id}`, `/ui/{path:path}`, `/generate`), or `unmatched` for a path no route has, and
gives the app inside the real path back. Paths answered by a middleware before the router (the front's
`/models`) are declared with `label_as_routes`.

Why: labelled by raw path, each job id and each random path a client tries (even one refused with 401) added
series of its own, and the histogram's buckets with each: 3,000 random paths took `/metrics` from 5.5 MB to 27 MB
and a scrape to 5.6 s, and the multiprocess folder grew with them. BentoML has no setting for the label. No
upstream issue. Checked range: `bentoml/_internal/server/http/instruments.py` and `_bentoml_impl/server/app.py`
are the same in the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bentoml._internal.server.http import instruments
from starlette.routing import BaseRoute, Match, Mount

from compat import Patch

PATCH = Patch(
    name="bentoml_route_metrics",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML labels its request metrics by raw path: every job id and random path adds series",
)

UNMATCHED = "unmatched"
REAL_PATH = "audio_studio.real_path"
StockTrafficMetrics = instruments.RunnerTrafficMetricsMiddleware
_paths_beside_routes: set[str] = set()


def label_as_routes(*paths: str) -> None:
    """Paths a middleware answers before the router: each is its own label (not `unmatched`)."""
    _paths_beside_routes.update(paths)


def _template(routes: Sequence[BaseRoute], scope: dict[str, Any]) -> str | None:
    """The path template of the route the router would take (a full match first, as Starlette's router)."""
    partial: tuple[BaseRoute, dict[str, Any]] | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return _route_path(route, {**scope, **child})
        if match is Match.PARTIAL and partial is None:
            partial = (route, {**scope, **child})
    return _route_path(*partial) if partial else None


def _route_path(route: BaseRoute, scope: dict[str, Any]) -> str | None:
    path: str = getattr(route, "path", "")
    if not isinstance(route, Mount):
        return path or None
    if not route.routes:  # an app without routes of its own (static files): anything under the mount
        return f"{path}/{{path:path}}"
    inner = _template(route.routes, scope)
    return path + inner if inner else None


def route_label(scope: dict[str, Any]) -> str:
    """The `endpoint` label of a request: its route's template, or `unmatched`."""
    if scope["path"] in _paths_beside_routes:
        return scope["path"]
    router = getattr(scope.get("app"), "router", None)
    return _template(getattr(router, "routes", ()), scope) or UNMATCHED


class _RealPath:
    """Inside the metrics middleware: the rest of the app sees the path the client sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        real = scope.get(REAL_PATH)
        if real is not None:
            scope = {key: value for key, value in scope.items() if key != REAL_PATH}
            scope["path"] = real
        await self.app(scope, receive, send)


class RouteLabelledTrafficMetrics(StockTrafficMetrics):  # type: ignore[misc, valid-type]
    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(_RealPath(app), **options)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "path": route_label(scope), REAL_PATH: scope["path"]}
        await super().__call__(scope, receive, send)


def install() -> None:
    instruments.RunnerTrafficMetricsMiddleware = RouteLabelledTrafficMetrics
