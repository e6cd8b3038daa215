"""OpenTelemetry tracing: one trace per request across the front and its runner, exported over OTLP/HTTP to a
real receiver (tests/otlp_receiver.py), with spans for upload decoding, the batcher wait and every model phase."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.audio_files import audio_file
from tests.conftest import Secured
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan

GENERATE_ORDER = ["batch_wait", "encode", "denoise", "decode", "rank"]
GENERATE_PHASES = {f"audioldm2.{name}" for name in GENERATE_ORDER}
CRITIQUE_PHASES = {f"music-flamingo.{name}" for name in ("batch_wait", "prepare", "prefill", "decode")}


def one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    [found] = [s for s in spans if s.service == service and s.name == name]
    return found


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans if s.parent_id == parent.span_id}


def traced(secured: Secured, route: str, runner: str, phases: set[str], **request: Any) -> list[ReceivedSpan]:
    """Send one request; the spans of its trace, once the front's, the runner's and `phases` have arrived."""
    response = httpx.post(f"{secured.url}{route}", headers=secured.auth("trace"), timeout=120, **request)
    assert response.status_code == 200, response.text
    expected = {("audio-studio", f"POST {route}"), (runner, f"POST {route}")} | {(runner, name) for name in phases}
    return secured.receiver.wait_for(response.headers["x-trace-id"], expected)


def test_a_generate_is_one_trace_from_front_to_model_phases(secured: Secured) -> None:
    body = {"prompt": "rain on a tin roof", "duration": 1, "steps": 3, "num_waveforms": 2}
    spans = traced(secured, "/generate", "audioldm2-runner", GENERATE_PHASES, json=body)

    front = one(spans, "audio-studio", "POST /generate")
    assert front.parent_id == ""  # the root: the client sent no trace context
    runner = one(spans, "audioldm2-runner", "POST /generate")
    assert runner.parent_id == front.span_id  # the front -> runner hop, in the same trace
    phases = children(spans, runner)
    assert set(phases) >= GENERATE_PHASES
    for name in GENERATE_PHASES:
        span = phases[name]
        assert span.attributes["batch_size"] >= 1 and span.attributes["group_size"] >= 1
        assert front.start_ns <= span.start_ns <= span.end_ns <= front.end_ns
    assert phases["audioldm2.denoise"].attributes["steps"] == 3
    assert phases["audioldm2.denoise"].attributes["rows"] == 2
    assert phases["audioldm2.rank"].attributes["waveforms"] == 2
    assert phases["audioldm2.decode"].attributes["duration_s"] > 0
    starts = [phases[f"audioldm2.{name}"].start_ns for name in GENERATE_ORDER]
    assert starts == sorted(starts)


def test_a_critique_traces_upload_decoding_prefill_and_decode(secured: Secured) -> None:
    spans = traced(
        secured,
        "/critique",
        "music-flamingo-runner",
        CRITIQUE_PHASES,
        data={"preset": "describe", "max_new_tokens": "6"},
        files={"audio": ("take.wav", audio_file("wav", 1.0), "audio/wav")},
    )

    front = one(spans, "audio-studio", "POST /critique")
    decoding = one(spans, "audio-studio", "front.decode_uploads")
    assert decoding.parent_id == front.span_id
    assert decoding.attributes["clips"] == 1 and abs(decoding.attributes["audio_seconds"] - 1.0) < 0.01
    runner = one(spans, "music-flamingo-runner", "POST /critique")
    assert runner.parent_id == front.span_id
    phases = children(spans, runner)
    assert set(phases) >= CRITIQUE_PHASES
    assert phases["music-flamingo.prefill"].attributes["prompt_tokens"] > 25  # the clip's audio tokens at least
    assert 1 <= phases["music-flamingo.decode"].attributes["new_tokens"] <= 6
    assert phases["music-flamingo.prefill"].end_ns <= phases["music-flamingo.decode"].start_ns
    assert decoding.end_ns <= runner.start_ns


def test_requests_after_an_upload_on_one_connection_get_traces_of_their_own(secured: Secured) -> None:
    """An upload's body arrives in chunks; the request after it on the same keep-alive connection once inherited
    its trace (compat/uvicorn_request_context.py)."""
    upload = {
        "data": {"preset": "describe", "max_new_tokens": "2"},
        "files": {"audio": ("take.wav", audio_file("wav", 5.0), "audio/wav")},
    }
    with httpx.Client(base_url=secured.url, headers=secured.auth("trace"), timeout=120) as client:
        ids = [client.post("/critique", **upload).headers["x-trace-id"] for _ in range(2)]
        ids.append(client.get("/healthz").headers["x-trace-id"])
    assert len(set(ids)) == 3, ids


def test_refusals_carry_a_trace_id_too(secured: Secured) -> None:
    response = httpx.post(f"{secured.url}/generate", json={}, timeout=30)
    assert response.status_code == 401
    assert len(response.headers["x-trace-id"]) == 32


def test_without_an_endpoint_nothing_is_exported_and_answers_still_name_a_trace(
    server: str, stray_receiver: OTLPReceiver
) -> None:
    """The shared server has no `AUDIO_STUDIO_OTLP_ENDPOINT`, only OpenTelemetry's own variables naming a receiver:
    requests work and carry X-Trace-Id, even in a trace the client marked sampled, and no span reaches it."""
    sampled = f"00-{'ab' * 16}-{'cd' * 8}-01"
    response = httpx.post(
        f"{server}/generate",
        json={"prompt": "x", "duration": 1, "steps": 2},
        headers={"traceparent": sampled},
        timeout=120,
    )
    assert response.status_code == 200
    assert len(response.headers["x-trace-id"]) == 32
    time.sleep(2.0)  # ten export intervals (OTEL_BSP_SCHEDULE_DELAY=200 in its environment)
    assert stray_receiver.requests == 0 and stray_receiver.spans == []
