"""API keys, quotas and load shedding against a real server with a keys file (the `secured` fixture).

Each test uses its own key, so per-key quotas of one test do not reach another.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from urllib.parse import urlparse

import httpx
import psutil
import pytest

from bench.edge_load import server_processes
from front.access import hash_key, parse_keys
from tests.conftest import Secured, keys_file_text

TINY_GENERATE = {"prompt": "a bell", "duration": 1, "steps": 2}


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["kind"] == "unauthorized" and "Authorization: Bearer" in body["error"]


def front_worker(secured: Secured) -> psutil.Process:
    assert secured.served.process is not None
    return server_processes(secured.served.process.pid)["front"]


def test_no_key_or_a_wrong_key_is_refused_before_any_work(secured: Secured) -> None:
    assert_unauthorized(httpx.post(f"{secured.url}/generate", json=TINY_GENERATE, timeout=30))
    wrong = {"Authorization": "Bearer " + secured.keys["alpha"] + "x"}
    assert_unauthorized(httpx.post(f"{secured.url}/generate", json=TINY_GENERATE, headers=wrong, timeout=30))
    assert_unauthorized(httpx.post(f"{secured.url}/critique", headers={"X-API-Key": "nope"}, timeout=30))
    assert_unauthorized(httpx.post(f"{secured.url}/no-such-route", timeout=30))  # no route map for strangers


def test_a_valid_key_is_served_from_either_header(secured: Secured) -> None:
    key = secured.keys["alpha"]
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        response = httpx.post(f"{secured.url}/generate", json=TINY_GENERATE, headers=headers, timeout=120)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "audio/wav"


def test_health_and_docs_are_open_metrics_need_a_key(secured: Secured) -> None:
    assert httpx.get(f"{secured.url}/livez", timeout=10).status_code == 200
    assert httpx.get(f"{secured.url}/readyz", timeout=10).status_code == 200
    document = httpx.get(f"{secured.url}/docs.json", timeout=10).json()
    assert set(document["components"]["securitySchemes"]) == {"bearerKey", "headerKey"}
    generate = document["paths"]["/generate"]["post"]
    assert {"401", "429"} <= set(generate["responses"]) and "security" not in generate  # the global one applies
    assert document["paths"]["/livez"]["get"]["security"] == []
    assert_unauthorized(httpx.get(f"{secured.url}/metrics", timeout=10))
    metrics = httpx.get(f"{secured.url}/metrics", headers=secured.auth("alpha"), timeout=10)
    assert metrics.status_code == 200 and "audio_studio_requests_total" in metrics.text


def test_a_key_removed_from_the_file_is_refused_without_a_restart(secured: Secured) -> None:
    keys = dict(secured.keys)
    revoked = keys.pop("gamma")
    try:
        secured.keys_file.write_text(keys_file_text(keys))
        deadline = time.monotonic() + 10
        while True:  # the file is looked at once a second at most
            response = httpx.post(f"{secured.url}/critique", headers={"X-API-Key": revoked}, timeout=30)
            if response.status_code == 401 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert_unauthorized(response)
    finally:
        secured.keys_file.write_text(keys_file_text(secured.keys))


def test_sighup_reloads_the_keys_file(secured: Secured) -> None:
    """A change the file's size and time do not show (same length, time put back) is picked up on SIGHUP."""
    path = secured.keys_file
    key = secured.keys["sighup"]
    headers = {"X-API-Key": key}
    time.sleep(1.1)  # the server looks at the file again: it now knows the file as it is
    assert httpx.post(f"{secured.url}/critique", headers=headers, timeout=30).status_code != 401
    before = path.stat()
    text = keys_file_text(secured.keys)
    entry = f"sha256:{hash_key(key)}"
    swapped = text.replace(entry, "sha256:" + "0" * 64)
    assert len(swapped) == len(text) and swapped != text
    with path.open("r+") as file:  # same inode, same size
        file.write(swapped)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    try:
        time.sleep(1.5)  # past the once-a-second look: the look alone must not see it
        assert httpx.post(f"{secured.url}/critique", headers=headers, timeout=30).status_code != 401
        front_worker(secured).send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.post(f"{secured.url}/critique", headers=headers, timeout=30).status_code != 401:
            assert time.monotonic() < deadline, "SIGHUP did not reload the keys file"
            time.sleep(0.2)
    finally:
        path.write_text(text)
        front_worker(secured).send_signal(signal.SIGHUP)
    assert front_worker(secured).is_running()  # SIGHUP reloads; it does not stop the server


def test_a_burst_over_the_rate_gets_429_while_another_key_is_served(secured: Secured) -> None:
    """Burst 4, 6 per minute: the fifth request at once is refused with the seconds until a token is back."""
    url = f"{secured.url}/generate"
    responses = []
    for _ in range(8):  # cheap: refused by validation after admission, each takes a token
        responses.append(httpx.post(url, json={}, headers=secured.auth("beta"), timeout=30))
        if responses[-1].status_code == 429:
            break
    # The burst's four pass; then 429, however slowly this machine sent them (a token is back every 10 s).
    statuses = [response.status_code for response in responses]
    assert statuses[:4] == [400] * 4 and statuses[-1] == 429, statuses
    refused = responses[-1]
    assert refused.json()["kind"] == "rate_limited" and "6 requests per minute" in refused.json()["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    other = httpx.post(url, json=TINY_GENERATE, headers=secured.auth("alpha"), timeout=120)
    assert other.status_code == 200, other.text


def test_a_full_runner_queue_is_refused_at_once(secured: Secured) -> None:
    """Batch 2 + 1 queued: with three slow requests in, the fourth gets 503 before its body is read."""
    slow = {"prompt": "a long drone", "duration": 10, "steps": 500}
    headers = secured.auth("queue")

    async def scenario() -> tuple[httpx.Response, bool]:
        async with httpx.AsyncClient(base_url=secured.url, timeout=300) as client:
            in_flight = [asyncio.create_task(client.post("/generate", json=slow, headers=headers)) for _ in range(3)]
            deadline = time.monotonic() + 30
            while outstanding(await client.get("/metrics", headers=secured.auth("alpha"))) < 3:
                assert time.monotonic() < deadline, "the slow requests were not let in"
                await asyncio.sleep(0.1)
            refused = await client.post("/generate", json=TINY_GENERATE, headers=headers)
            waited_for_a_slot = any(task.done() for task in in_flight)
            for task in in_flight:  # the client leaves: the runner drops the jobs
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            return refused, waited_for_a_slot

    refused, waited_for_a_slot = asyncio.run(scenario())
    assert refused.status_code == 503, refused.text
    assert refused.json()["kind"] == "unavailable" and "queue is full" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    assert not waited_for_a_slot, "the refusal came only once a slow request had finished"
    metrics = httpx.get(f"{secured.url}/metrics", headers=secured.auth("alpha"), timeout=10).text
    assert re.search(r'audio_studio_requests_shed_total\{reason="queue_full",runner="audioldm2"\} [1-9]', metrics)


def stalled_upload(secured: Secured, route: str, key: str, content_type: str) -> socket.socket:
    """A client that announces 1000 bytes, sends one once the app reads its body, and then nothing more.

    `Expect: 100-continue` makes the server say when its app first reads the body: by then the request has
    passed admission, whatever admission does.
    """
    address = urlparse(secured.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=60)
    head = (
        f"POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secured.keys[key]}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    )
    sock.sendall(head.encode())
    assert sock.recv(1024).startswith(b"HTTP/1.1 100 "), route
    sock.sendall(b"-")  # a valid start of either body: JSON is read whole, a form's boundary begins with it
    return sock


def answer_of(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """The status, head and body of the answer, read until the server closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def test_stalled_uploads_hold_no_runner_room_and_are_dropped_with_408(secured: Secured) -> None:
    """Each runner takes 2 + 1 here: three uploads per runner that never finish leave both runners' rooms free,
    and each is answered 408 and closed once its body is late (3 s on this server)."""
    stalled = [stalled_upload(secured, "/generate", "stall-json", "application/json") for _ in range(3)]
    form = "multipart/form-data; boundary=b"
    stalled += [stalled_upload(secured, "/critique", "stall-form", form) for _ in range(3)]
    try:
        admitted = secured.auth("admitted")
        generated = httpx.post(f"{secured.url}/generate", json=TINY_GENERATE, headers=admitted, timeout=120)
        assert generated.status_code == 200, generated.text
        form_data = {"prompt": "x", "max_new_tokens": "2"}
        critique = httpx.post(f"{secured.url}/critique", data=form_data, headers=admitted, timeout=120)
        assert critique.status_code == 200, critique.text
        for sock in stalled:
            status, head, body = answer_of(sock)
            assert status == 408 and b"connection: close" in head.lower(), head + body
            error = json.loads(body)
            assert error["kind"] == "request_timeout" and error["detail"][0]["loc"] == ["body"], error
    finally:
        for sock in stalled:
            sock.close()


def outstanding(metrics: httpx.Response) -> float:
    match = re.search(r'audio_studio_runner_outstanding\{runner="audioldm2"\} (\S+)', metrics.text)
    return float(match.group(1)) if match else 0.0


def test_json_routes_take_only_json(secured: Secured) -> None:
    """A browser's cross-site `text/plain` POST (no preflight) must not start work, even with a valid key."""
    for content_type in ("text/plain", None):
        headers = {**secured.auth("alpha"), **({"Content-Type": content_type} if content_type else {})}
        response = httpx.post(f"{secured.url}/generate", content=b'{"prompt": "x"}', headers=headers, timeout=30)
        assert response.status_code == 415, response.text


def test_cors_is_off_unless_origins_are_configured(secured: Secured) -> None:
    preflight = httpx.options(
        f"{secured.url}/generate",
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("sha256:" + "a" * 64 + " ci\n# comment\n\n", ["ci"]),
        ("sha256:" + "B" * 64 + "   # unnamed\n", ["key-bbbbbbbb"]),
        ("sha256:abc short\nplain-key\nsha256:" + "c" * 64 + " ok\n", ["ok"]),  # malformed lines skipped
    ],
)
def test_keys_file_format(text: str, names: list[str]) -> None:
    assert [entry.name for entry in parse_keys(text)] == names


def test_a_family_the_deployment_does_not_run_is_a_400_naming_model_and_the_choices(secured: Secured) -> None:
    headers = secured.auth("models")
    listed = httpx.get(f"{secured.url}/models", headers=headers, timeout=30).json()["models"]
    assert {family["name"] for family in listed} == {"audioldm2", "music-flamingo"}
    refused = httpx.post(f"{secured.url}/generate", json={"prompt": "x", "model": "audioldm"}, headers=headers)
    assert refused.status_code == 400 and refused.json()["detail"][0]["loc"] == ["model"]
    assert "'audioldm' is not deployed here; choices: audioldm2" in refused.json()["error"]


def test_a_path_cannot_write_a_log_line_of_its_own(secured: Secured) -> None:
    """An encoded line break in the path, before any key is checked: our refusal line and BentoML's access line
    both log it escaped, on their own line."""
    forged = "2026-12-04T00:00:00+0000 [INFO] API keys loaded: forged"
    response = httpx.get(f"{secured.url}/generate%0a{forged.replace(' ', '%20')}%0d%1b", timeout=30)
    assert_unauthorized(response)
    escaped = f"/generate\\n{forged}\\r\\x1b"
    deadline = time.monotonic() + 10  # the access line is written once the answer is sent
    while (log := secured.served.log_path.read_text(errors="replace")).count(escaped) < 2:
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.1)
    lines = [line for line in log.splitlines() if forged in line]
    assert len(lines) == 2 and all(not line.startswith(forged) and "\x1b" not in line for line in lines), lines


def test_keys_never_reach_the_log_but_their_names_do(secured: Secured) -> None:
    """Runs last in this module: by now every key has been sent, right and wrong."""
    log = secured.served.log_path.read_text(errors="replace")
    for key in secured.keys.values():
        assert key not in log
    assert re.search(r"API keys loaded: alpha, beta, gamma", log)
