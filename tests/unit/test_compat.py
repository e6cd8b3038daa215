"""compat/: each patch's checked version range, and the upstream behaviour each patch relies on.

The upstream tests fail when a library changes what its patch replaces or works around: then read the patch's
docstring, check it against the new version (or drop it where upstream fixed the problem) and set its range.
In-process and fast: no server, no checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import bentoml
import pytest
from _bentoml_impl.client.proxy2 import AsyncClient
from aiohttp import web
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

import compat
from compat import (
    bentoml_access_log,
    bentoml_dispatcher,
    bentoml_message_spans,
    bentoml_metrics_dir,
    bentoml_mime_type,
    bentoml_multipart,
    bentoml_request_log,
    bentoml_route_metrics,
    bentoml_session_refresh,
    bentoml_timeout,
)
from schemas import CritiqueOutputFormat, CritiqueRequest

MODULES = {name.removeprefix("compat."): importlib.import_module(name) for name in compat.MODULES}


# ---- the package and the version check ------------------------------------------------------------------


def test_every_module_of_the_package_is_a_patch_named_after_its_file() -> None:
    files = {path.stem for path in Path(compat.__file__).parent.glob("*.py")} - {"__init__"}
    assert files == set(MODULES)
    for name, module in MODULES.items():
        assert module.PATCH.name == name
        assert module.__doc__ and module.PATCH.why, name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_installed_library_is_in_the_checked_range(name: str) -> None:
    assert compat.unchecked(MODULES[name].PATCH) is None


@pytest.mark.parametrize("fake", ["0.0.1", "999.0"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_library_outside_the_range_refuses_to_start(monkeypatch: pytest.MonkeyPatch, name: str, fake: str) -> None:
    patch = MODULES[name].PATCH
    real = compat.installed_version
    monkeypatch.setattr(compat, "installed_version", lambda lib: fake if lib == patch.library else real(lib))
    with pytest.raises(compat.UncheckedLibraryVersion) as refused:
        compat.install_all()
    message = str(refused.value)
    assert f"{patch.library} {fake} is installed" in message
    assert f"patch {name} (compat/{name}.py)" in message and patch.checked in message


def test_install_all_installs_each_patch_once() -> None:
    from _bentoml_impl.serde import ALL_SERDE
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.server.http import instruments
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from opentelemetry.instrumentation import asgi

    compat.install_all()
    metrics_dir = BentoMLContainer.prometheus_multiproc_dir.get()
    compat.install_all()
    assert BentoMLContainer.prometheus_multiproc_dir.get() == metrics_dir
    request_logger = logging.getLogger(bentoml_request_log.BENTOML_REQUEST_LOGGER)
    assert request_logger.filters.count(bentoml_request_log.FILTER) == 1
    assert logging.getLogRecordFactory().escapes  # type: ignore[attr-defined]
    assert instruments.RunnerTrafficMetricsMiddleware is bentoml_route_metrics.RouteLabelledTrafficMetrics
    assert asgi.OpenTelemetryMiddleware is bentoml_message_spans.ServerSpanOnly
    assert ALL_SERDE["multipart/form-data"] is ALL_SERDE["application/x-www-form-urlencoded"]
    assert ALL_SERDE["multipart/form-data"] is bentoml_multipart.StrictMultipartSerde
    assert TimeoutMiddleware.__call__ is bentoml_timeout.call_with_timer_cancelled
    assert not getattr(ServiceAppFactory.__init__.__wrapped__, bentoml_dispatcher.MARK, False)  # wrapped once


# ---- bentoml_multipart --------------------------------------------------------------------------------------


class Form(BaseModel):
    multipart_fields: ClassVar[tuple[str, ...]] = ()  # what BentoML's input models declare
    prompt: str


def form_request(body: bytes) -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", b"application/x-www-form-urlencoded")]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}, receive)


def test_bentoml_still_parses_form_text_as_json_and_looks_the_parser_up_per_request() -> None:
    from _bentoml_impl.serde import ALL_SERDE, MultipartSerde
    from _bentoml_impl.server.app import ServiceAppFactory

    with pytest.raises(ValidationError, match="valid string"):  # prompt=808 arrives as a number
        asyncio.run(MultipartSerde().parse_request(form_request(b"prompt=808"), Form))
    parsed = asyncio.run(bentoml_multipart.StrictMultipartSerde().parse_request(form_request(b"prompt=808"), Form))
    assert parsed.prompt == "808"
    assert {"multipart/form-data", "application/x-www-form-urlencoded"} <= set(ALL_SERDE)
    assert "ALL_SERDE.get(media_type" in inspect.getsource(ServiceAppFactory.api_endpoint)


def test_form_text_parses_into_a_strict_request_s_numbers_flags_and_choices() -> None:
    """The public requests are strict for JSON bodies (schemas.py); a form's fields are text and still parse."""
    parse = bentoml_multipart.StrictMultipartSerde().parse_request
    body = b"prompt=808&max_new_tokens=3&do_sample=true&temperature=0.5&seed=7&output=json"
    parsed = asyncio.run(parse(form_request(body), CritiqueRequest))
    assert (parsed.prompt, parsed.max_new_tokens, parsed.do_sample, parsed.temperature, parsed.seed) == (
        "808",
        3,
        True,
        0.5,
        7,
    )
    assert parsed.output is CritiqueOutputFormat.JSON
    with pytest.raises(ValidationError, match="temperature\n  Input should be a finite number"):
        asyncio.run(parse(form_request(b"temperature=nan"), CritiqueRequest))


# ---- bentoml_timeout ----------------------------------------------------------------------------------------


ASGICall = Callable[[Any, dict[str, Any], Any, Any], Awaitable[None]]


def timers_cancelled_after_a_request(call: ASGICall) -> list[bool]:
    """Run one request through `call(app, scope, receive, send)`; whether each timer it scheduled was cancelled."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict[str, Any]) -> None:
        pass

    async def request() -> list[bool]:
        loop = asyncio.get_running_loop()
        timers: list[asyncio.TimerHandle] = []
        call_later = loop.call_later

        def noted_call_later(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            timers.append(call_later(*args, **kwargs))
            return timers[-1]

        loop.call_later = noted_call_later  # type: ignore[method-assign]
        await call(app, {"type": "http"}, None, send)
        return [timer.cancelled() for timer in timers]

    return asyncio.run(request())


def test_bentoml_timeout_middleware_still_leaves_its_timer_running_after_the_request() -> None:
    from bentoml._internal.server.http import traffic

    spec = importlib.util.spec_from_file_location("stock_traffic", traffic.__file__)  # unpatched, whatever ran
    assert spec and spec.loader
    stock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stock)
    assert list(inspect.signature(stock.TimeoutMiddleware).parameters) == ["app", "timeout"]

    def stock_call(app: Any, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        return stock.TimeoutMiddleware(app, timeout=3600)(scope, receive, send)

    def patched_call(app: Any, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        return bentoml_timeout.call_with_timer_cancelled(traffic.TimeoutMiddleware(app, 3600), scope, receive, send)

    assert timers_cancelled_after_a_request(stock_call) == [False]
    assert timers_cancelled_after_a_request(patched_call) == [True]


# ---- bentoml_dispatcher -------------------------------------------------------------------------------------


@bentoml.service(name="compat-probe")
class Probe:
    @bentoml.api(batchable=True, max_batch_size=4)
    @bentoml_dispatcher.concurrent_batches
    async def overlapping(self, xs: list[int]) -> list[int]:
        return xs

    @bentoml.api(batchable=True, max_batch_size=4)
    async def one_at_a_time(self, xs: list[int]) -> list[int]:
        return xs


def probe_dispatchers() -> dict[str, Any]:
    from _bentoml_impl.server.app import ServiceAppFactory

    config = {"compat-probe": {"traffic": {"timeout": 60}, "workers": 1}}
    factory = ServiceAppFactory(
        Probe, services=config, enable_metrics=False, enable_access_control=False, access_control_options={}
    )
    return factory.dispatchers


def batches_admitted(dispatcher: Any) -> int:
    admitted = 0
    while dispatcher._sema.acquire():
        admitted += 1
    return admitted


def test_bentoml_dispatcher_still_admits_one_batch_at_a_time_through_its_sema() -> None:
    from bentoml._internal.marshal.dispatcher import CorkDispatcher, NonBlockSema

    dispatchers = probe_dispatchers()  # the unmarked API is BentoML's, installed patch or not
    assert set(dispatchers) == {"overlapping", "one_at_a_time"}
    assert isinstance(dispatchers["one_at_a_time"], CorkDispatcher)
    assert isinstance(dispatchers["one_at_a_time"]._sema, NonBlockSema)
    assert batches_admitted(dispatchers["one_at_a_time"]) == 1
    bentoml_dispatcher.install()
    assert batches_admitted(probe_dispatchers()["overlapping"]) == bentoml_dispatcher.BATCHES_IN_FLIGHT


BENTOML_CONTROLLER_SHA256 = "dafc788663463402945244366bd96425e9a4151de1c6d78204d8b257b7c30751"  # 1.4.39, 1.4.40


def batch_with_requests_queued_behind_it(dispatcher: Any) -> tuple[list[int], int]:
    """Request 1 starts a 0.3 s batch; requests 2-4 arrive while it runs. The batches' sizes, and how often the
    controller looked at its semaphore in the meantime (training skipped: its default latency model is kept)."""
    looks = 0
    is_locked = dispatcher._sema.is_locked

    def counted() -> bool:
        nonlocal looks
        looks += 1
        return is_locked()

    async def no_training(*args: int) -> None:
        pass

    sizes: list[int] = []

    async def batch(inputs: tuple[list[int], ...]) -> list[list[int]]:
        sizes.append(len(inputs))
        await asyncio.sleep(0.3)
        return list(inputs)

    dispatcher._sema.is_locked, dispatcher.train_optimizer = counted, no_training
    call = dispatcher(batch)

    async def requests() -> list[list[int]]:
        first = asyncio.create_task(call([1]))
        await asyncio.sleep(0.05)
        return await asyncio.gather(first, *(call([i]) for i in (2, 3, 4)))

    try:
        assert asyncio.run(requests()) == [[1], [2], [3], [4]]
    finally:
        dispatcher.shutdown()
    return sizes, looks


def test_bentoml_controller_still_polls_every_millisecond_while_a_batch_runs() -> None:
    """What the patch replaces, as BentoML has it: its controller's source, and its polling."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    source = inspect.getsource(CorkDispatcher.controller)
    assert hashlib.sha256(source.encode()).hexdigest() == BENTOML_CONTROLLER_SHA256  # wait_for_the_batch_in_flight
    stock = CorkDispatcher(60_000, 4, fallback=lambda: None, get_batch_size=len)
    sizes, looks = batch_with_requests_queued_behind_it(stock)
    assert sizes == [1, 3] and looks > 100


def test_the_patched_controller_waits_for_the_batch_in_flight_and_forms_the_same_batches() -> None:
    bentoml_dispatcher.install()
    dispatchers = probe_dispatchers()
    sizes, looks = batch_with_requests_queued_behind_it(dispatchers["one_at_a_time"])
    assert sizes == [1, 3] and looks < 10
    sizes, looks = batch_with_requests_queued_behind_it(dispatchers["overlapping"])  # no batch holds the others
    assert sizes[0] == 1 and sum(sizes) == 4 and looks < 10


# ---- bentoml_metrics_dir ------------------------------------------------------------------------------------


def test_bentoml_serve_still_ignores_prometheus_multiproc_dir_and_takes_its_container_folder() -> None:
    from _bentoml_impl.server.serving import serve_http
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml.serving import ensure_prometheus_dir

    directory = inspect.signature(ensure_prometheus_dir).parameters["directory"].default
    assert directory is BentoMLContainer.prometheus_multiproc_dir  # simple_di's Provide[...] is the provider
    assert 'env = {"PROMETHEUS_MULTIPROC_DIR": ensure_prometheus_dir()}' in inspect.getsource(serve_http)


def test_the_serving_process_gets_a_fresh_metrics_folder_and_a_worker_keeps_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bentoml._internal.configuration.containers import BentoMLContainer

    folder = BentoMLContainer.prometheus_multiproc_dir
    with folder.patch(folder.get()):  # restored afterwards
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/chosen/by/the/server")
        before = folder.get()
        bentoml_metrics_dir.install()
        assert folder.get() == before
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        bentoml_metrics_dir.install()
        assert Path(folder.get()).name.startswith("audio-studio-metrics-") and os.path.isdir(folder.get())


# ---- bentoml_request_log ------------------------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_bentoml_still_logs_a_rejected_request_at_error_with_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from _bentoml_impl.server import app
    from bentoml._internal.server import http_app

    assert app.log_exception is http_app.log_exception
    assert http_app.logger.name == bentoml_request_log.BENTOML_REQUEST_LOGGER
    monkeypatch.setattr(http_app.logger, "filters", [])  # unpatched, whatever ran before
    records = Records()
    monkeypatch.setattr(http_app.logger, "handlers", [records])
    request = SimpleNamespace(url=SimpleNamespace(path="/generate"), method="POST")
    try:
        Form.model_validate({})
    except ValidationError:
        http_app.log_exception(request)  # type: ignore[arg-type]
    [stock] = records.records
    assert stock.levelno == logging.ERROR and stock.exc_info and stock.args == ("/generate", "POST")
    assert bentoml_request_log.FILTER.filter(stock)
    assert (stock.levelno, stock.getMessage(), stock.exc_info) == (
        logging.INFO,
        "POST /generate: invalid request (prompt)",
        None,
    )


# ---- bentoml_access_log ---------------------------------------------------------------------------------------

FORGED = "/generate\n2026-12-04T00:00:00+0000 [INFO] API keys loaded: forged"


def test_bentoml_access_log_still_logs_the_decoded_path_as_an_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstream: the path goes into the record as it came, inside an argument (which the factory escapes)."""
    from bentoml._internal.server.http.access import AccessLogMiddleware

    monkeypatch.setattr(logging, "_logRecordFactory", logging.LogRecord)  # unpatched, whatever ran before
    records = Records()
    access = logging.getLogger("bentoml.access")
    monkeypatch.setattr(access, "handlers", [records])
    monkeypatch.setattr(access, "level", logging.INFO)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "scheme": "http", "method": "GET", "path": FORGED, "client": ("127.0.0.1", 1)}
    asyncio.run(AccessLogMiddleware(app)(scope, None, send))
    [stock] = records.records
    assert "\n" not in stock.msg and "\n2026-12-04" in stock.getMessage()
    assert any(isinstance(arg, str) and FORGED in arg for arg in stock.args)


def test_logged_values_are_escaped_and_templates_keep_their_line_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging, "_logRecordFactory", logging.LogRecord)
    bentoml_access_log.install()
    factory = logging.getLogRecordFactory()
    bentoml_access_log.install()
    assert logging.getLogRecordFactory() is factory  # wrapped once
    records = Records()
    logger = logging.getLogger("audio_studio.test_escape")
    monkeypatch.setattr(logger, "handlers", [records])
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.info("refused %s (%s)\nsecond line %d", FORGED, "\r\x1b\x00\x85\u2028ok", 3)
    logger.info("%(path)s", {"path": FORGED})
    logger.info(ValueError(FORGED))
    plain, mapped, error = (record.getMessage() for record in records.records)
    escaped_path = "/generate\\n2026-12-04T00:00:00+0000 [INFO] API keys loaded: forged"
    assert plain == f"refused {escaped_path} (\\r\\x1b\\x00\\x85\\u2028ok)\nsecond line 3"
    assert mapped == error == escaped_path


# ---- bentoml_route_metrics ----------------------------------------------------------------------------------


class Labelled:
    """Stands in for BentoML's metrics: records the labels each is given."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def labels(self, **labels: Any) -> Labelled:
        self.seen.append(labels)
        return self

    def inc(self) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def set_to_current_time(self) -> None:
        pass

    @contextlib.contextmanager
    def track_inprogress(self) -> Iterator[None]:
        yield


def endpoint_labels(
    monkeypatch: pytest.MonkeyPatch, middleware: type, requests: list[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """`requests` through `middleware` in an app routed as BentoML's (routes, a mounted job app, static files):
    the `endpoint` label of each, and the paths the app saw."""
    from _bentoml_impl.server.mount import PassiveMount
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.testclient import TestClient

    totals = Labelled()

    def setup(self: Any) -> None:
        self.metrics_request_total = totals
        self.metrics_request_duration = self.metrics_request_in_progress = Labelled()
        self.metrics_last_request_timestamp = Labelled()
        self._is_setup = True

    monkeypatch.setattr(bentoml_route_metrics.StockTrafficMetrics, "_setup", setup)
    seen: list[str] = []

    async def files(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await PlainTextResponse("ok")(scope, receive, send)

    async def route(request: Request) -> PlainTextResponse:
        seen.append(request.url.path)
        return PlainTextResponse("ok")

    jobs = Starlette(routes=[Route("/{job_id}", route), Route("/{job_id}/events", route)])
    app = Starlette(
        routes=[Route("/generate", route, methods=["POST"]), PassiveMount("/jobs", jobs), Mount("/ui", files)],
        middleware=[Middleware(middleware)],
    )
    with TestClient(app) as client:
        for method, path in requests:
            client.request(method, path)
    return [labels["endpoint"] for labels in totals.seen], seen


REQUESTS = [("GET", "/jobs/abc"), ("GET", "/jobs/def/events"), ("GET", "/ui/x.js"), ("POST", "/generate")]
MORE_REQUESTS = [("GET", "/generate"), ("GET", "/nope-123"), ("POST", "/jobs/abc/x"), ("GET", "/models")]


def test_bentoml_request_metrics_still_label_by_raw_path_with_the_class_the_factory_imports_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from _bentoml_impl.server.app import ServiceAppFactory

    labels, _ = endpoint_labels(monkeypatch, bentoml_route_metrics.StockTrafficMetrics, REQUESTS)
    assert labels == [path for _, path in REQUESTS]
    built = " ".join(inspect.getsource(ServiceAppFactory.middlewares.fget).split())
    assert "from bentoml._internal.server.http.instruments import ( RunnerTrafficMetricsMiddleware, )" in built


def test_request_metrics_are_labelled_by_route_template_and_the_app_sees_the_real_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bentoml_route_metrics, "_paths_beside_routes", set())
    bentoml_route_metrics.label_as_routes("/models")
    requests = REQUESTS + MORE_REQUESTS
    labels, seen = endpoint_labels(monkeypatch, bentoml_route_metrics.RouteLabelledTrafficMetrics, requests)
    assert labels == [
        "/jobs/{job_id}",
        "/jobs/{job_id}/events",
        "/ui/{path:path}",
        "/generate",
        "/generate",  # its wrong method: still its route
        "unmatched",
        "unmatched",
        "/models",
    ]
    assert seen == ["/jobs/abc", "/jobs/def/events", "/ui/x.js", "/generate"]  # the app's own answers


# ---- bentoml_message_spans ------------------------------------------------------------------------------------


def spans_of_a_chunked_request(middleware: type) -> list[str]:
    """The span names `middleware` records for one POST whose body arrives in 5 messages, answered in 2."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    messages = [{"type": "http.request", "body": b"x" * 1024, "more_body": i < 4} for i in range(5)]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": [],
        "query_string": b"",
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 3000),
        "client": ("127.0.0.1", 40000),
    }
    asyncio.run(middleware(app, tracer_provider=provider)(scope, receive, send))
    return [span.name for span in exporter.get_finished_spans()]


def test_the_stock_tracing_middleware_makes_a_span_per_message_and_bentoml_builds_it_without_options() -> None:
    from _bentoml_impl.server.app import ServiceAppFactory

    stock = spans_of_a_chunked_request(bentoml_message_spans.StockOpenTelemetryMiddleware)
    assert stock.count("POST /upload http receive") == 5 and stock.count("POST /upload http send") == 2
    built = " ".join(inspect.getsource(ServiceAppFactory.middlewares.fget).split())
    assert "from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware" in built
    assert "exclude_spans" not in built  # so the subclass's default is the one that applies


def test_the_installed_tracing_middleware_keeps_the_server_span_alone() -> None:
    assert spans_of_a_chunked_request(bentoml_message_spans.ServerSpanOnly) == ["POST /upload"]


# ---- bentoml_session_refresh --------------------------------------------------------------------------------


def test_bentoml_runner_client_still_closes_its_session_under_the_calls_on_it() -> None:
    stock = bentoml_session_refresh.StockSessionManager
    defaults = inspect.signature(stock).parameters
    assert (defaults["max_age"].default, defaults["max_requests"].default) == (300.0, 100)

    async def call_on_a_replaced_session() -> BaseException:
        manager = stock("http://127.0.0.1:9", timeout=5, headers={}, max_requests=0)
        first = await manager.get_session()
        await manager.get_session()  # over max_requests: a new session, and the first one closed
        try:
            await first.get("/")
        except RuntimeError as error:
            return error
        finally:
            await manager.close()
        raise AssertionError("the replaced session still served a call")

    assert "Session is closed" in str(asyncio.run(call_on_a_replaced_session()))
    assert "SessionManager(" in inspect.getsource(AsyncClient.__init__)  # the name install() replaces


WAIT_SCHEMA = {
    "name": "waiter",
    "type": "service",
    "routes": [
        {
            "name": "wait",
            "route": "/wait",
            "input": {"type": "object", "properties": {"seconds": {"type": "number"}}},
            "output": {"type": "string"},
        }
    ],
}


async def waiter_url() -> tuple[str, web.AppRunner]:
    """A real HTTP server on 127.0.0.1 that BentoML's runner client can call: `wait` answers after `seconds`."""

    async def schema(request: web.Request) -> web.Response:
        return web.json_response(WAIT_SCHEMA)

    async def wait(request: web.Request) -> web.Response:
        await asyncio.sleep((await request.json())["seconds"])
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/schema.json", schema)
    app.router.add_post("/wait", wait)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}", runner


def test_a_long_runner_call_outlives_any_number_of_session_refreshes() -> None:
    """BentoML's own runner client (AsyncClient) with the patch installed, against a real server: one long call,
    then more calls than `max_requests` meanwhile. The long call ends normally and its session closes after it."""
    bentoml_session_refresh.install()

    async def scenario() -> tuple[list[str], str, bool, bool]:
        url, server = await waiter_url()
        client = AsyncClient(url, server_ready_timeout=0, max_requests=3)
        try:
            await client.__aenter__()  # fetches the routes from /schema.json
            long = asyncio.create_task(client.wait(seconds=1.0))
            await asyncio.sleep(0.2)
            manager = client._session_manager
            first = manager._session
            short = await asyncio.gather(*(client.wait(seconds=0.01) for _ in range(8)))
            open_during = not first.closed
            answer = await long
            await asyncio.sleep(0.05)  # the close is scheduled when the last call ends
            return short, answer, open_during, first.closed
        finally:
            await client.close()
            await server.cleanup()

    short, answer, open_during, closed_after = asyncio.run(scenario())
    assert short == ["done"] * 8 and answer == "done"
    assert open_during and closed_after


# ---- bentoml_tracer -----------------------------------------------------------------------------------------


def test_bentoml_tracer_provider_is_still_not_the_global_one() -> None:
    from bentoml._internal.configuration.containers import BentoMLContainer
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from compat.bentoml_tracer import tracer_provider

    assert isinstance(tracer_provider(), TracerProvider)
    assert tracer_provider() is BentoMLContainer.tracer_provider.get()
    assert trace.get_tracer_provider() is not tracer_provider()


# ---- bentoml_mime_type --------------------------------------------------------------------------------------


def runner_answer_types() -> list[type]:
    """The output classes of the runners' batchable APIs: the root models BentoML labels each answer with."""
    from runners.audioldm2 import AudioLDM2Runner
    from runners.music_flamingo import MusicFlamingoRunner

    return [AudioLDM2Runner.inner.generate.output_spec, MusicFlamingoRunner.inner.critique.output_spec]


def test_bentoml_still_builds_a_root_models_schema_for_its_media_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """When BentoML stops building the schema per call (or caches it itself), the patch can go."""
    stock = bentoml_mime_type.STOCK_MIME_TYPE.__func__
    for answer_type in runner_answer_types():
        built: list[int] = []
        schema = answer_type.model_json_schema

        def counted(*args: Any, _schema: Any = schema, _built: list[int] = built, **kwargs: Any) -> Any:
            _built.append(1)
            return _schema(*args, **kwargs)

        monkeypatch.setattr(answer_type, "model_json_schema", counted)
        assert stock(answer_type) == stock(answer_type) == "application/json"
        assert len(built) == 2


def test_media_types_are_worked_out_once_per_class_and_stay_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from _bentoml_sdk.io_models import IOMixin

    compat.install_all()
    stock = bentoml_mime_type.STOCK_MIME_TYPE.__func__
    for answer_type in runner_answer_types():
        expected = stock(answer_type)
        assert answer_type.mime_type() == expected
        monkeypatch.setattr(answer_type, "model_json_schema", lambda *a, **k: pytest.fail("schema built again"))
        assert answer_type.mime_type() == expected
    assert IOMixin.mime_type.__func__ is bentoml_mime_type._mime_type  # type: ignore[attr-defined]
    assert bentoml_mime_type._mime_type.cache_info().maxsize == bentoml_mime_type.CLASSES_CACHED


# ---- diffusers_language_model -------------------------------------------------------------------------------


def test_audioldm2_pipeline_still_fails_with_a_gpt2model_language_model() -> None:
    import torch
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=32, bos_token_id=0, eos_token_id=0)
    prompt = torch.zeros(1, 3, 8)
    stock = SimpleNamespace(language_model=GPT2Model(config))  # what model_index.json's "GPT2Model" loads
    with pytest.raises(AttributeError, match="_update_model_kwargs_for_generation"):
        AudioLDM2Pipeline.generate_language_model(stock, inputs_embeds=prompt, max_new_tokens=2)
    fixed = SimpleNamespace(language_model=GPT2LMHeadModel(config))  # what load_language_model returns
    assert AudioLDM2Pipeline.generate_language_model(fixed, inputs_embeds=prompt, max_new_tokens=2).shape == (1, 2, 8)


def test_audioldm2_unet_still_logs_inside_its_forward_at_a_length_off_its_up_factor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What compat/diffusers_unet_logging.py has dynamo skip: the one call that split the compiled UNet."""
    import torch
    from diffusers import AudioLDM2UNet2DConditionModel
    from diffusers.pipelines.audioldm2 import modeling_audioldm2

    from compat.diffusers_unet_logging import ignore_unet_forward_logging
    from models.tiny_audioldm2 import GPT2_DIM, T5_DIM, UNET_LAYOUT

    unet = AudioLDM2UNet2DConditionModel(**UNET_LAYOUT, cross_attention_dim=([None, GPT2_DIM, T5_DIM],) * 3)
    logged: list[str] = []
    monkeypatch.setattr(modeling_audioldm2.logger, "info", logged.append)
    frames = 2**unet.num_upsamplers + 1
    with torch.no_grad():
        unet(
            torch.zeros(1, unet.config.in_channels, frames, 16),
            torch.tensor([1]),
            encoder_hidden_states=torch.zeros(1, 8, GPT2_DIM),
            encoder_hidden_states_1=torch.zeros(1, 4, T5_DIM),
        )
    assert logged == ["Forward upsample size to force interpolation output size."]
    monkeypatch.undo()
    ignore_unet_forward_logging()
    assert modeling_audioldm2.logger.info in torch._dynamo.config.ignore_logging_functions


def test_transformers_still_compiles_the_decoding_step_on_a_cpu_only_with_the_private_flag() -> None:
    """What compat/transformers_compile_config.py sets: without it, `decoding=compiled` would not compile on a CPU."""
    from transformers import CompileConfig, GenerationConfig, Qwen2Config, Qwen2ForCausalLM, StaticCache

    from compat.transformers_compile_config import decoding_compile_config

    config = Qwen2Config(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = Qwen2ForCausalLM(config)
    cache = {"past_key_values": StaticCache(config=config, max_cache_len=8)}
    stock = GenerationConfig(compile_config=CompileConfig(backend="eager"))
    flagged = GenerationConfig(compile_config=decoding_compile_config("eager", None))
    assert not model._valid_auto_compile_criteria(cache, stock)
    assert model._valid_auto_compile_criteria(cache, flagged)
    assert flagged.compile_config.dynamic is True


# ---- transformers_many_clips --------------------------------------------------------------------------------


@pytest.mark.parametrize("processor", ["AudioFlamingo3Processor", "MusicFlamingoProcessor"])
def test_music_flamingo_processors_still_refuse_two_clips_in_one_conversation(processor: str) -> None:
    import numpy as np
    import transformers

    from compat.transformers_many_clips import many_clips_processor_class

    clips, text = [np.zeros(1600, np.float32)] * 2, ["<sound><sound> compare the two"]
    stock = getattr(transformers, processor)
    with pytest.raises(ValueError, match="Got 1 text but 2 audios"):
        stock.__new__(stock).validate_inputs(audio=clips, text=text)  # the check reads no state
    many = many_clips_processor_class(stock)
    many.__new__(many).validate_inputs(audio=clips, text=text)
    assert many_clips_processor_class(stock) is many


# ---- uvicorn_request_context --------------------------------------------------------------------------------


def test_bentoml_still_starts_uvicorn_without_fresh_request_contexts() -> None:
    """When either changes (BentoML passes the option, or uvicorn makes it the default), the patch can go."""
    import inspect

    import uvicorn
    from _bentoml_impl.worker import service as bentoml_worker

    assert "reset_contextvars" not in inspect.getsource(bentoml_worker)
    uvicorn_init = getattr(uvicorn.Config.__init__, "__wrapped__", uvicorn.Config.__init__)  # before the patch
    assert inspect.signature(uvicorn_init).parameters["reset_contextvars"].default is False


def test_uvicorn_configs_start_each_request_from_an_empty_context_once_installed() -> None:
    import uvicorn

    compat.install_all()
    assert uvicorn.Config(app=None).reset_contextvars is True
    assert uvicorn.Config(app=None, reset_contextvars=False).reset_contextvars is False


def test_the_servers_parse_http_with_httptools() -> None:
    """BentoML leaves uvicorn's protocol on "auto", which takes httptools when it is installed (requirements.txt):
    a 5 MB upload costs the front 9 ms less than with h11. Both parsers create request tasks alike, so the patch
    above covers either; this fails if httptools goes missing or BentoML starts naming a protocol."""
    import inspect

    import uvicorn
    from _bentoml_impl.worker import service as bentoml_worker
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert "http=" not in inspect.getsource(bentoml_worker)
    config = uvicorn.Config(app=lambda scope, receive, send: None)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol


def test_the_servers_run_on_uvloop() -> None:
    """BentoML leaves uvicorn's loop on "auto" (it names one on Windows only), which takes uvloop when it is
    installed (requirements.txt): a 5 MB upload costs the front 3 ms less CPU than on asyncio's selector loop.
    This fails if uvloop goes missing or BentoML starts naming a loop elsewhere."""
    import asyncio
    import inspect

    import uvicorn
    import uvloop
    from _bentoml_impl.worker import service as bentoml_worker

    source = inspect.getsource(bentoml_worker)
    named = 'uvicorn_extra_options["loop"]'
    assert source.count(named) == 1 and "if psutil.WINDOWS:" in source.split(named)[0][-400:]
    loop = uvicorn.Config(app=lambda scope, receive, send: None).get_loop_factory()()
    try:
        assert isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
