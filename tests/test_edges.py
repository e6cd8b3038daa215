"""Crafted requests at the HTTP edge, against a real `bentoml serve` (tiny profile): every one gets a clear 4xx
in the one error shape, never a 500, a server path, an echoed filename or a request to a client-chosen address."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import soundfile

from tests.audio_files import audio_file

TIMEOUT = 120
WAV = ("clip.wav", audio_file("wav", 1.5), "audio/wav")
FAST_TRANSFORM = {"prompt": "jazz drums", "steps": "2"}


def assert_error(response: httpx.Response, status: int, field: str | None = None, *phrases: str) -> dict:
    """The one error shape; with `field`, an entry names it and its message holds every phrase."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "kind", "detail"} and isinstance(body["error"], str), body
    if field is not None:
        messages = [d["msg"] for d in body["detail"] if d["loc"] == [field]]
        assert messages, body
        assert all(p in messages[0] for p in phrases), body
    return body


def post_form(server: str, route: str, data: dict | None = None, files: object = None, **kw) -> httpx.Response:
    return httpx.post(f"{server}{route}", data=data, files=files, timeout=TIMEOUT, **kw)


# ---- malformed bodies and forms --------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "phrase"),
    [
        ({"content-type": "multipart/form-data"}, b"garbage", "Missing boundary"),
        ({"content-type": "multipart/form-data; boundary=xyz"}, b"garbage--xyz--", "Invalid multipart"),
    ],
)
def test_malformed_multipart_is_a_400(server: str, headers: dict, body: bytes, phrase: str) -> None:
    for route in ("/transform", "/critique"):
        response = httpx.post(f"{server}{route}", content=body, headers=headers, timeout=TIMEOUT)
        assert_error(response, 400, "body", phrase)


def test_a_text_part_over_its_limit_and_too_many_fields_are_400(server: str) -> None:
    huge = post_form(server, "/critique", data={"prompt": "a" * 1_100_000})
    assert_error(huge, 400, "body", "128KB")
    many = post_form(server, "/critique", data={f"f{i}": "1" for i in range(1001)})
    assert_error(many, 400, "body", "Too many fields")


def test_text_in_a_file_field_is_refused_and_never_fetched(server: str) -> None:
    """BentoML would download a URL sent as the file; here it is a 400 and the address sees no request."""
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    listener = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listener.server_port}/clip.wav"
        for value in ("hello", url):
            response = post_form(server, "/transform", data={**FAST_TRANSFORM, "audio": value})
            assert_error(response, 400, "audio", "must be a file")
        assert_error(post_form(server, "/critique", data={"audio": url, "prompt": "x"}), 400, "audio", "file")
    finally:
        listener.shutdown()
    assert hits == []


def test_more_files_than_a_field_takes_are_refused(server: str) -> None:
    twenty = [("audio", WAV)] * 20
    assert_error(post_form(server, "/transform", data=FAST_TRANSFORM, files=twenty), 400, "body", "Too many files")
    two = [("audio", WAV), ("audio", WAV)]
    assert_error(post_form(server, "/transform", data=FAST_TRANSFORM, files=two), 400, "audio", "at most 1")
    assert_error(post_form(server, "/critique", data={"prompt": "x"}, files=two), 400, "audio", "at most 1")


def test_a_long_filename_is_fine_and_a_hostile_one_is_never_echoed(server: str) -> None:
    long_name = "a" * 300 + ".wav"
    ok = post_form(server, "/transform", data=FAST_TRANSFORM, files={"audio": (long_name, WAV[1], "audio/wav")})
    assert ok.status_code == 200, ok.text
    hostile = "<img src=x onerror=alert(1)>.wav"
    refused = post_form(
        server, "/transform", data=FAST_TRANSFORM, files={"audio": (hostile, b"not audio", "audio/wav")}
    )
    body = assert_error(refused, 415, "audio", "not a readable audio file")
    text = refused.text
    assert "<" not in text and "onerror" not in text and "/tmp" not in text and "bentoml-request" not in text, body


# ---- paths, methods and redirects ---------------------------------------------------


def test_redirects_never_name_the_clients_host(server: str) -> None:
    """The page's folder redirect is relative; a route's path with a slash added is a 404, not a redirect."""
    host = {"Host": "evil.example"}
    page = httpx.get(f"{server}/ui?tab=1", headers=host, timeout=TIMEOUT)
    assert page.status_code == 307 and page.headers["location"] == "/ui/?tab=1"
    assert httpx.get(f"{server}/ui", timeout=TIMEOUT, follow_redirects=True).url.path == "/ui/"
    for method, path in [("POST", "/generate/"), ("GET", "/generate/"), ("GET", "/docs.json/"), ("POST", "/ui")]:
        response = httpx.request(method, f"{server}{path}", json={"prompt": "x"}, headers=host, timeout=TIMEOUT)
        assert "location" not in response.headers, (method, path)
        assert assert_error(response, 404)["kind"] == "not_found", (method, path)


def test_unknown_paths_and_wrong_methods_answer_in_the_error_shape(server: str) -> None:
    for path in ("/jobs", "/nope", "/ui/nope.js", "/jobs/x/y/z"):
        assert assert_error(httpx.get(f"{server}{path}", timeout=TIMEOUT), 404)["kind"] == "not_found", path
    wrong = httpx.get(f"{server}/generate", timeout=TIMEOUT)
    assert assert_error(wrong, 405)["kind"] == "method_not_allowed" and wrong.headers["allow"] == "POST"
    for probe in ("/livez", "/readyz"):  # plain text, as the contract declares
        answer = httpx.get(f"{server}{probe}", timeout=TIMEOUT)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain"), probe


# ---- content type and size before the body is read --------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/vnd.bentoml+pickle", "application/xml"])
def test_json_routes_take_only_json(server: str, content_type: str) -> None:
    response = httpx.post(
        f"{server}/generate", content=b'{"prompt": "x"}', headers={"content-type": content_type}, timeout=TIMEOUT
    )
    assert_error(response, 415, "Content-Type", "application/json")


def raw_request(server: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a hand-written request head (and a partial body) and read the status line and answer."""
    address = urlparse(server)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_an_oversized_content_length_is_refused_before_the_body_is_sent(server: str) -> None:
    head = (
        "POST /transform HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 262144000"
    )
    status, answer = raw_request(server, head, b"--b\r\n")  # 5 bytes of 250 MB: the answer cannot wait for the rest
    assert status == 413 and b"too_large" in answer and b"201 MiB" in answer


def test_a_chunked_body_is_counted_and_cut_at_the_limit(server: str) -> None:
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
        block = bytes(1 << 20)
        for _ in range(260):  # 260 MiB, over the 201 MiB limit, with no Content-Length
            yield block

    response = httpx.post(
        f"{server}/transform", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}, timeout=120
    )
    assert_error(response, 413, "body", "201 MiB")


def unknown_fields(count: int) -> bytes:
    return json.dumps({"prompt": "x", **{f"k{i:05d}": 0 for i in range(count)}}).encode()


def test_a_json_body_is_limited_to_64_kib_and_many_unknown_fields_get_a_bounded_error(server: str) -> None:
    """80,000 unknown keys (869 KB) once got a 9.8 MB answer and 1.7 s of the event loop: now 413 from the
    headers; the most that fits the limit (5,000 keys) gets the first five named and the rest counted."""
    headers = {"content-type": "application/json"}
    huge = httpx.post(f"{server}/generate", content=unknown_fields(80_000), headers=headers, timeout=TIMEOUT)
    assert_error(huge, 413, "body", "the limit for this route is 64 KiB")
    assert len(unknown_fields(5_000)) <= 64 * 1024
    for route in ("/generate", "/jobs/generate"):
        many = httpx.post(f"{server}{route}", content=unknown_fields(5_000), headers=headers, timeout=TIMEOUT)
        body = assert_error(many, 400)
        assert [d["loc"] for d in body["detail"]] == [[f"k{i:05d}"] for i in range(5)] + [["body"]]
        assert body["detail"][-1]["msg"] == "and 4995 more unknown field(s), not named"
        assert len(many.content) < 2_000


def test_a_non_numeric_content_length_is_a_400(server: str) -> None:
    status, _ = raw_request(
        server, "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12abc"
    )
    assert status == 400


# ---- form values are text ----------------------------------------------------------


@pytest.mark.parametrize("prompt", ["808", "true", "0", "null", "[1, 2]", '"quoted"'])
def test_a_prompt_is_text_whatever_it_looks_like(server: str, prompt: str) -> None:
    transform = post_form(server, "/transform", data={"prompt": prompt, "steps": "2"}, files={"audio": WAV})
    assert transform.status_code == 200, transform.text
    critique = post_form(server, "/critique", data={"prompt": prompt, "max_new_tokens": "2"})
    assert critique.status_code == 200, critique.text


def test_numbers_and_flags_in_forms_still_parse(server: str) -> None:
    response = post_form(
        server,
        "/critique",
        data={"prompt": "x", "max_new_tokens": "3", "do_sample": "true", "temperature": "0.5", "seed": "7"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["seed"] == 7 and response.json()["tokens_generated"] <= 3


# ---- values that would break a shared forward pass -----------------------------------


@pytest.mark.parametrize(("temperature", "top_p"), [("1e-40", "0.9"), ("0", "0.9"), ("0.7", "0"), ("nan", "0.9")])
def test_sampling_values_that_break_a_batch_are_refused(server: str, temperature: str, top_p: str) -> None:
    data = {"prompt": "x", "max_new_tokens": "8", "do_sample": "true", "temperature": temperature, "top_p": top_p}
    body = assert_error(post_form(server, "/critique", data=data), 400)
    assert body["detail"][0]["loc"][0] in ("temperature", "top_p")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"prompt": "x", "guidance_scale": 1e400}', "guidance_scale"),  # inf once parsed
        ('{"prompt": "x", "steps": NaN}', "steps"),
        ({"prompt": "\u200b\u200b"}, None),  # zero-width text: accepted or refused, never a 500
        ({"prompt": "x", "steps": 1, "scheduler": "ddim", "guidance_scale": 20}, None),
    ],
)
def test_extreme_diffusion_values_never_give_a_500(server: str, body: dict | str, field: str | None) -> None:
    content = body if isinstance(body, str) else json.dumps({**body, "duration": 1})
    response = httpx.post(
        f"{server}/generate", content=content, headers={"content-type": "application/json"}, timeout=TIMEOUT
    )
    if field is None:
        assert response.status_code in (200, 400), response.text
    else:
        assert_error(response, 400, field)


@pytest.mark.parametrize("route", ["/generate", "/jobs/generate"])
@pytest.mark.parametrize(
    ("value", "field", "phrase"),
    [
        ('"duration": true', "duration", "a valid number"),
        ('"duration": "5"', "duration", "a valid number"),
        ('"steps": 3.0', "steps", "a valid integer"),
        ('"duration": NaN', "duration", "a finite number"),
        ('"guidance_scale": Infinity', "guidance_scale", "a finite number"),
    ],
)
def test_json_values_are_taken_as_the_types_they_are_sent_as(
    server: str, route: str, value: str, field: str, phrase: str
) -> None:
    """`true` is no 1 s and `"5"` no 5 s in a JSON body, and NaN is no number out of range but no finite one."""
    content = '{"prompt": "x", ' + value + "}"
    response = httpx.post(
        f"{server}{route}", content=content, headers={"content-type": "application/json"}, timeout=TIMEOUT
    )
    assert_error(response, 400, field, phrase)


@pytest.mark.parametrize(("route", "field"), [("/transform", "strength"), ("/critique", "temperature")])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_form_text_nan_and_inf_are_no_finite_number(server: str, route: str, field: str, value: str) -> None:
    """Form fields are text parsed into numbers (see test_http_transform.py, test_http_critique.py), NaN included."""
    response = post_form(server, route, data={"prompt": "x", field: value}, files={"audio": WAV})
    assert_error(response, 400, field, "a finite number")


@pytest.mark.parametrize(("strength", "steps"), [("0.001", "1"), ("1", "1"), ("0.999", "500")])
def test_extreme_strength_and_steps_transform(server: str, strength: str, steps: str) -> None:
    data = {"prompt": "x", "strength": strength, "steps": steps}
    response = post_form(server, "/transform", data=data, files={"audio": WAV})
    assert response.status_code == 200, response.text


# ---- seeds ---------------------------------------------------------------------------


def test_every_returned_seed_is_one_the_api_accepts(server: str) -> None:
    top = 2**53 - 1
    refused = httpx.post(f"{server}/generate/json", json={"prompt": "x", "seed": top, "num_waveforms": 4}, timeout=60)
    assert_error(refused, 400, "seed", str(top - 3))
    body = {"prompt": "x", "seed": top - 3, "num_waveforms": 4, "duration": 1, "steps": 2}
    answer = httpx.post(f"{server}/generate/json", json=body, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    seeds = sorted(w["seed"] for w in answer.json()["waveforms"])
    assert seeds == [top - 3, top - 2, top - 1, top]


# ---- uploads ------------------------------------------------------------------------


def silent(channels: int, rate: int, seconds: float, container: str = "FLAC") -> bytes:
    buffer = io.BytesIO()
    data = np.zeros((int(rate * seconds), channels), dtype=np.int16)
    soundfile.write(buffer, data, rate, format=container, subtype="PCM_16")
    return buffer.getvalue()


def test_too_short_clips_name_the_upload_field(server: str) -> None:
    short = ("short.wav", audio_file("wav", 0.5), "audio/wav")
    assert_error(post_form(server, "/transform", data=FAST_TRANSFORM, files={"audio": short}), 400, "audio", "minimum")
    tiny = ("tiny.wav", audio_file("wav", 0.02), "audio/wav")
    for field in ("audio", "reference"):
        files = {"audio": WAV, field: tiny}
        response = post_form(server, "/critique", data={"prompt": "x"}, files=files)
        assert_error(response, 400, field, "minimum")


def test_a_header_promising_huge_audio_is_refused_before_decoding(server: str) -> None:
    """8 channels at 655 kHz: a 171 KB file that would decode to hundreds of MB."""
    data = silent(8, 655_350, 1.0)
    response = post_form(server, "/transform", data=FAST_TRANSFORM, files={"audio": ("hi.flac", data, "audio/flac")})
    assert_error(response, 400, "audio", "384000")


def test_bentomls_own_client_still_works(server: str, tmp_path) -> None:
    """It JSON-encodes every multipart text field; the front decodes them for it (and only for it)."""
    import bentoml

    clip = tmp_path / "clip.wav"
    clip.write_bytes(audio_file("wav", 1.5))
    with bentoml.SyncHTTPClient(server, timeout=TIMEOUT) as client:
        answer = client.critique({"audio": [clip], "preset": "key", "prompt": "808", "max_new_tokens": 2})
        assert answer["preset"] == "key"
        result = client.transform_json({"audio": clip, "prompt": "jazz", "strength": 0.6, "steps": 2})
        assert result["duration"] == 1.5
