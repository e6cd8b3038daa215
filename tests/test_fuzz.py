"""Property-based fuzzing of the served contract (GET /docs.json, OpenAPI 3.1.0) with schemathesis.

Every operation the document lists is fuzzed against a real `bentoml serve` (the `server` fixture, tiny
profile): every route, the job and OpenAI routes included, e.g. POST /generate, /transform, /edit, /critique
and GET /healthz, /readyz, /metrics. Each response must pass schemathesis' `not_a_server_error` (no 5xx),
`status_code_conformance`, `content_type_conformance`, `response_headers_conformance` and
`response_schema_conformance`: every answer, the 400s and 415s included, is one the contract declares.

Reproducible and short: seed SEED (schemathesis mixes it with each operation's label), no example database,
the `examples` phase (the document's request examples) and the `fuzzing` phase with MAX_EXAMPLES inputs per
operation, valid and invalid mixed (`mode = all`); the `coverage` phase (an unbounded number of boundary
cases) and the `stateful` phase are off. A GET without parameters has one input. A failure prints a curl
command that reproduces it (capped values included: the body is capped before it is sent).

Cost: in-range values of the knobs that set the model's work are capped before sending (COST_CAPS: steps 2,
duration 2, num_waveforms 2, max_new_tokens 4, an edit's seconds 2 and repaint_jumps 1; an absent steps,
duration or max_new_tokens is sent as its cap, since the defaults cost seconds); one valid generate at 500
steps, 600 s and 4 waveforms takes hours on CPU. Out-of-range values are sent as generated, so validation is
fuzzed over the whole range.
File fields get schemathesis' bytes (answered 415) or, when Hypothesis picks it, a real 1.5 s WAV, so the
200 answers of /transform (and of /critique with audio, when drawn) are checked too.

Measured on the 2-core development machine (tiny profile, CPU, nothing else running), SEED 20251130,
MAX_EXAMPLES 10: `pytest -s tests/test_fuzz.py` takes 46.5 s by pytest's clock and 53 s wall-clock (the server
start of about 25 s, the requests, the server stop). 262 requests over 30 operations, e.g. /generate 12 (200 x7,
400 x5), /transform 12 (200 x1, 400 x9, 415 x2), /edit 13 (400 x11, 415 x2), /critique 13 (200 x2, 400 x11),
each GET without parameters 1 (200). No failures. At 20 examples per operation the suite spent about twice
as long here for no finding; with seed 7, 80 examples per operation and the coverage phase on (before the
job, OpenAI and edit routes): 964 requests, about 5 minutes, no failures. The test prints the statuses it saw
per operation.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.transport.serialization import Binary

from schemas import MAX_AUDIO_SECONDS
from tests.audio_files import audio_file

SEED = 20251130
MAX_EXAMPLES = 10
REQUEST_TIMEOUT_S = 60  # a hang is a finding, not a stuck CI job
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = {
    "POST /generate",
    "POST /generate/json",
    "POST /transform",
    "POST /transform/json",
    "POST /edit",
    "POST /edit/json",
    "POST /critique",
    "GET /healthz",
    "GET /livez",
    "GET /readyz",
    "GET /metrics",
    "GET /models",
    "POST /jobs/generate",
    "POST /jobs/generate/json",
    "POST /jobs/transform/json",
    "POST /jobs/transform",
    "POST /jobs/edit",
    "POST /jobs/edit/json",
    "POST /jobs/critique",
    "GET /jobs/{job_id}",
    "DELETE /jobs/{job_id}",
    "POST /jobs/{job_id}/cancel",
    "GET /jobs/{job_id}/events",
    "GET /jobs/{job_id}/result",
    "POST /v1/chat/completions",
    "POST /v1/audio/generate",
    "GET /v1/models",
    "GET /v1/models/{model}",
}
# The knobs that set the model's work: (highest valid value, highest value sent). Each is valid from 1 up; an
# in-range value above the cap is sent as the cap, an out-of-range one as generated, and an absent one whose
# default is above the cap (steps 25, duration 10, max_new_tokens 512) as the cap.
COST_CAPS: dict[str, tuple[float, float]] = {
    "steps": (500, 2),
    "duration": (MAX_AUDIO_SECONDS, 2.0),
    "num_waveforms": (4, 2),
    "max_new_tokens": (2048, 4),
    "max_tokens": (2048, 4),
    "max_completion_tokens": (2048, 4),
    "num_inference_steps": (500, 2),
    "audio_length": (MAX_AUDIO_SECONDS, 2.0),
    "seconds": (MAX_AUDIO_SECONDS, 2.0),
    "repaint_jumps": (4, 1),
}
DEFAULT_ABOVE_CAP = ("steps", "duration", "max_new_tokens", "max_tokens", "num_inference_steps", "audio_length")
KNOBS = {
    "/generate": ("steps", "duration", "num_waveforms"),
    "/generate/json": ("steps", "duration", "num_waveforms"),
    "/transform": ("steps",),
    "/transform/json": ("steps",),
    "/edit": ("steps", "seconds", "num_waveforms", "repaint_jumps"),
    "/edit/json": ("steps", "seconds", "num_waveforms", "repaint_jumps"),
    "/critique": ("max_new_tokens",),
    "/jobs/generate": ("steps", "duration", "num_waveforms"),
    "/jobs/generate/json": ("steps", "duration", "num_waveforms"),
    "/jobs/transform/json": ("steps",),
    "/jobs/transform": ("steps",),
    "/jobs/edit": ("steps", "seconds", "num_waveforms", "repaint_jumps"),
    "/jobs/edit/json": ("steps", "seconds", "num_waveforms", "repaint_jumps"),
    "/jobs/critique": ("max_new_tokens",),
    "/v1/chat/completions": ("max_tokens", "max_completion_tokens"),
    "/v1/audio/generate": ("num_inference_steps", "audio_length"),
}
FILE_FIELDS = ("audio", "reference")
REAL_CLIP = audio_file("wav", 1.5)

# operation label -> status -> count, and -> seconds spent in requests: filled by the fuzz test, reported by the
# summary test.
STATUSES: dict[str, Counter[int]] = defaultdict(Counter)
SECONDS: dict[str, float] = defaultdict(float)


def cheap(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body with its route's cost knobs capped: a valid request stays valid, and takes about a second."""
    out = dict(body)
    for name in KNOBS.get(path, ()):
        highest, cap = COST_CAPS[name]
        value = out.get(name)
        if name not in out and name in DEFAULT_ABOVE_CAP:
            out[name] = cap
        elif isinstance(value, int | float) and not isinstance(value, bool) and cap < value <= highest:
            out[name] = type(value)(cap)
    return out


def with_real_clips(body: dict[str, Any], use_real: list[bool]) -> dict[str, Any]:
    """File fields that hold generated bytes get a real WAV where `use_real` says so (Hypothesis draws it)."""
    out = dict(body)
    for name, real in zip(FILE_FIELDS, use_real, strict=True):
        if real and isinstance(out.get(name), Binary):
            out[name] = Binary(REAL_CLIP)
    return out


def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """Generated bodies (the fuzzing phase): a real clip in file fields where Hypothesis draws it."""
    if not isinstance(body, dict) or not any(isinstance(body.get(name), Binary) for name in FILE_FIELDS):
        return st.just(body)
    return st.lists(st.booleans(), min_size=len(FILE_FIELDS), max_size=len(FILE_FIELDS)).map(
        lambda use_real: with_real_clips(body, use_real)
    )


@pytest.fixture(scope="module")
def api_schema(server: str) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": server,
            "request-timeout": REQUEST_TIMEOUT_S,
            "suppress-health-check": ["too_slow"],  # about generating inputs on a busy machine, not the API
            "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "fuzzing": {"enabled": True},
                "coverage": {"enabled": False},
                "stateful": {"enabled": False},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{server}/docs.json", config=config, timeout=30)
    schema.hook(flatmap_body)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_answer_conforms_to_the_contract(case: Any) -> None:
    label = case.operation.label
    if isinstance(case.body, dict):  # every phase's inputs, the document's examples included
        case.body = cheap(case.operation.path, case.body)
    started = time.perf_counter()
    try:
        response = case.call_and_validate(checks=CHECKS)
    finally:
        SECONDS[label] += time.perf_counter() - started
    STATUSES[label][response.status_code] += 1


def test_every_operation_was_fuzzed(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after the fuzz test (file order): the statuses seen per operation, and every operation reached."""
    if not STATUSES:
        pytest.skip("the fuzz test did not run in this session")
    lines = [
        f"{label}: {sum(counts.values())} requests in {SECONDS[label]:.1f} s, "
        + ", ".join(f"{status} x{n}" for status, n in sorted(counts.items()))
        for label, counts in sorted(STATUSES.items())
    ]
    with capsys.disabled():
        print(f"\nschemathesis, seed {SEED}, {MAX_EXAMPLES} examples per operation; statuses seen:")
        for line in lines:
            print(f"  {line}")
    assert set(STATUSES) == OPERATIONS, lines
