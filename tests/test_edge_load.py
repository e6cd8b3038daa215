"""The edge load test (bench/edge_load.py) in a short form against the session server: 64 mixed good and bad
requests at concurrency 16 across generate, transform and critique (~10 s here after the server is up).

Same code and the same checks as the benchmark: good requests answer 200 (or 503 with Retry-After), bad ones
their expected 4xx naming the field, every error body has the one shape, every request gets an HTTP answer (no
transport errors), and no server process (arbiter, front, each runner) is lost.

Memory is looser here than in the benchmark. The benchmark holds every process's RSS a few seconds after the load
within 10% of its level after the warm-up; this test allows MEMORY_TOLERANCE (25%), because in a short run one
larger batch (a critique batch of several clips) is a larger share of the growth. Measured in seven runs of this
test: front +1.0 to +2.9%, audioldm2-runner +0.4 to +2.5%, music-flamingo-runner +0.1 to +6.6%; once +11.4% for
music-flamingo-runner in an 80-request run of the script. (The front also keeps ~5 KB per request for 15 minutes:
BentoML's timeout middleware, see bench/README.md; a short run does not see it.)
"""

from __future__ import annotations

import time

import pytest

from bench import edge_load
from bench.edge_load import KINDS, Clips, failed_checks, make_mix, run_edge_load, server_processes

REQUESTS = 64  # every kind at least once (the mix test checks it)
CONCURRENCY = 16
WARMUP = 16
SETTLE_S = 2.0
MEMORY_TOLERANCE = 0.25


def test_the_mix_is_fixed_by_its_seed_and_covers_every_kind() -> None:
    mix = make_mix(REQUESTS, seed=7)
    assert [(k.name, s) for k, s in mix] == [(k.name, s) for k, s in make_mix(REQUESTS, seed=7)]
    assert {k.name for k, _ in mix} == {k.name for k in KINDS}
    assert [(k.name, s) for k, s in mix] != [(k.name, s) for k, s in make_mix(REQUESTS, seed=8)]
    clips = Clips()
    for kind in KINDS:  # every request builds; bad ones name the status and field they must get
        call = kind.build(clips, 1)
        assert call.route.startswith(("/generate", "/transform", "/critique"))
        assert kind.good == (kind.expect == 200) and (kind.field is None) == kind.good


@pytest.mark.parametrize(
    ("status", "body", "ok"),
    [
        (400, b'{"error": "x: bad", "kind": "invalid_input", "detail": [{"loc": ["x"]}]}', True),
        (503, b'{"error": "down", "kind": "unavailable", "detail": []}', True),
        (400, b'{"error": "x", "kind": "too_large", "detail": []}', False),  # kind does not match the status
        (400, b'[{"loc": ["x"], "msg": "bad"}]', False),  # BentoML's own shape
        (415, b'{"error": "x", "kind": "unsupported_media_type"}', False),  # no detail
        (500, b"Internal Server Error", False),
    ],
)
def test_error_shape_check(status: int, body: bytes, ok: bool) -> None:
    assert (edge_load.error_shape_problem(body, status) is None) == ok


def test_edge_load_short_form(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    processes = server_processes(edge_load.arbiter_pid_for_port(port))
    started = time.monotonic()
    report = run_edge_load(
        server,
        processes,
        requests=REQUESTS,
        concurrency=CONCURRENCY,
        warmup=WARMUP,
        settle_s=SETTLE_S,
        memory_tolerance=MEMORY_TOLERANCE,
    )
    print(
        f"edge load: {report['load']['requests_sent']} requests in {report['load']['wall_s']:.1f} s "
        f"(run {time.monotonic() - started:.1f} s), statuses {report['load']['statuses']}, memory "
        + ", ".join(f"{role} {m['change']:+.1%}" for role, m in report["memory"].items() if m["change"] is not None)
    )
    assert set(processes) == {"arbiter", "front", "audioldm2-runner", "music-flamingo-runner"}
    assert report["kinds_never_drawn"] == []
    assert report["load"]["transport_errors"] == 0
    assert not failed_checks(report), failed_checks(report) + [str(p) for p in report["problems"][:10]]
