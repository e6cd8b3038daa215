"""Edge load test: many good and bad requests at once against a real server, tiny profile.

Starts `bentoml serve service:AudioStudio` (AUDIO_STUDIO_PROFILE=tiny, its own BENTOML_HOME in a temp
dir, a free port of 127.0.0.1), warms it up with a round of good requests, then sends a fixed, seeded
mix of good and bad requests across the three APIs (generate + generate/json, transform +
transform/json, critique) from `concurrency` closed-loop clients, and checks what came back:

- every good request succeeds (200 with a body of the route's kind) or gets a documented retryable
  answer (503 with Retry-After);
- every bad request gets its expected 4xx naming the field at fault, never a 5xx;
- every error body has the one shape of core/errors.py: {"error": str, "kind": str, "detail": list};
- no request is lost: every one got an HTTP answer (transport errors are counted apart and must be 0);
- the memory (RSS) of every process of the `bentoml serve` tree (the arbiter, the front worker, each
  runner worker) is back within `--memory-tolerance` (10%) of its level after the warm-up, a few
  seconds after the load; peak RSS during the load is reported too.

It prints and writes bench/results/edge-load.json and .md, and exits non-zero when a check fails.
tests/test_edge_load.py runs the same code (`run_edge_load`, `failed_checks`) in a short form.

    .venv/bin/python bench/edge_load.py                       # 500 requests at concurrency 32
    .venv/bin/python bench/edge_load.py --requests 120 --concurrency 16 --out /tmp/edge
    .venv/bin/python bench/edge_load.py --url http://127.0.0.1:3000   # a server you started (memory: by port)
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
from bench.tiny_profile import ROOT  # the tiny profile, before any project import

# isort: split

import httpx
import numpy as np
import psutil
import soundfile

from bench.common import DEFAULT_OUT, fmt, header, header_markdown, percentiles, write_report
from bench.served import serve
from core.errors import STATUS_OF_KIND
from schemas import MAX_SEED
from tests.audio_files import audio_file

REQUEST_TIMEOUT_S = 300
MEMORY_SAMPLE_S = 0.2
DEFAULT_REQUESTS = 500
DEFAULT_CONCURRENCY = 32
DEFAULT_SEED = 20261130
DEFAULT_SETTLE_S = 5.0
DEFAULT_MEMORY_TOLERANCE = 0.10
ERROR_KEYS = {"error", "kind", "detail"}

# ---- what is sent -------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request. With `declared_length` it goes over a raw connection with that Content-Length header
    and only `content` as the body (the server must answer from the header; httpx would refuse to send it)."""

    route: str
    json: Any = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    declared_length: int | None = None


class Clips:
    """Every upload of the mix, built once (libsndfile writes them; 44.1 kHz stereo unless said)."""

    def __init__(self) -> None:
        self.wav_1s = audio_file("wav", 1.0)
        self.wav_1s5 = audio_file("wav", 1.5)
        self.wav_2s = audio_file("wav", 2.0)
        self.wav_half_s = audio_file("wav", 0.5)
        self.gif = b"GIF89a" + bytes(500)
        self.pdf = b"%PDF-1.7 not audio " * 20
        buffer = io.BytesIO()  # a header that declares 8 channels at 655.35 kHz (FLAC's highest rate); 0.1 s
        soundfile.write(buffer, np.zeros((65_535, 8), dtype=np.float32), 655_350, format="FLAC", subtype="PCM_16")
        self.flac_8ch_655k = buffer.getvalue()


PROMPTS = (
    "Rain on a tin roof",
    "A dog barking in the distance",
    "Techno music with a strong, upbeat tempo",
    "A jazz drum kit with brushes",
    "Birds singing at dawn",
)
QUESTIONS = ("What is the relative minor of E flat major?", "How do I count a bar of 7/8?", "Name a walking bass")


def wav(clip: bytes, name: str = "clip.wav") -> tuple[str, tuple[str, bytes, str]]:
    return ("audio", (name, clip, "audio/wav"))


def form(**fields: Any) -> dict[str, str]:
    return {k: str(v) for k, v in fields.items()}


@dataclass(frozen=True)
class Kind:
    """A class of request: its route, whether it is valid, what must come back, how often it is drawn."""

    name: str
    api: str  # generate | transform | critique
    good: bool
    expect: int  # 200 for good requests, the expected status for bad ones
    field: str | tuple[str, ...] | None  # bad requests: the field (one of the fields) the error's `detail` names
    weight: float
    build: Callable[[Clips, int], Call]  # (clips, request seed) -> the request
    answer: str = ""  # good requests: "audio" (a file) or the top-level key the JSON answer must hold


def generate_body(seed: int, **extra: Any) -> dict[str, Any]:
    return {"prompt": PROMPTS[seed % len(PROMPTS)], "duration": 1, "steps": 3, "seed": seed, **extra}


def transform_fields(seed: int, **extra: Any) -> dict[str, str]:
    return form(**{"prompt": PROMPTS[seed % len(PROMPTS)], "steps": 3, "strength": 0.6, "seed": seed, **extra})


def transform_clip(clips: Clips, seed: int) -> bytes:
    return clips.wav_1s if seed % 2 else clips.wav_2s


def good(name: str, api: str, weight: float, answer: str, build: Callable[[Clips, int], Call]) -> Kind:
    return Kind(name, api, True, 200, None, weight, build, answer)


def bad(
    name: str, api: str, expect: int, field: str | tuple[str, ...], weight: float, build: Callable[[Clips, int], Call]
) -> Kind:
    return Kind(name, api, False, expect, field, weight, build)


def flac_8ch(c: Clips) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("audio", ("c.flac", c.flac_8ch_655k, "audio/flac"))]


MULTIPART = {"content-type": "multipart/form-data; boundary=b"}
JSON = {"content-type": "application/json"}

# fmt: off
KINDS: tuple[Kind, ...] = (
    # ---- good: small and valid (50% of the mix) ---------------------------------------------------------
    good("generate", "generate", 9, "audio", lambda c, s: Call("/generate", json=generate_body(s))),
    good("generate_json", "generate", 9, "waveforms",
         lambda c, s: Call("/generate/json", json=generate_body(s, format="flac"))),
    good("transform", "transform", 8, "audio",
         lambda c, s: Call("/transform", data=transform_fields(s), files=[wav(transform_clip(c, s))])),
    good("transform_json", "transform", 8, "waveforms",
         lambda c, s: Call("/transform/json", data=transform_fields(s), files=[wav(transform_clip(c, s))])),
    good("critique_text", "critique", 8, "text",
         lambda c, s: Call("/critique", data=form(prompt=QUESTIONS[s % len(QUESTIONS)], max_new_tokens=8, seed=s))),
    good("critique_clip", "critique", 8, "text",
         lambda c, s: Call("/critique", data=form(preset="caption", max_new_tokens=8, seed=s), files=[wav(c.wav_1s5)])),
    # ---- bad: fields out of range -------------------------------------------------------------------------
    bad("duration_601", "generate", 400, "duration", 2,
        lambda c, s: Call("/generate", json=generate_body(s, duration=601))),
    bad("steps_0_json", "generate", 400, "steps", 2,
        lambda c, s: Call("/generate/json", json=generate_body(s, steps=0))),
    bad("steps_0_form", "transform", 400, "steps", 2,
        lambda c, s: Call("/transform/json", data=transform_fields(s, steps=0), files=[wav(c.wav_1s)])),
    bad("temperature_0", "critique", 400, "temperature", 2,
        lambda c, s: Call("/critique", data=form(prompt="x", do_sample="true", temperature=0, max_new_tokens=8))),
    bad("temperature_1e-40", "critique", 400, "temperature", 2,
        lambda c, s: Call("/critique", data=form(prompt="x", do_sample="true", temperature="1e-40"))),
    bad("seed_plus_waveforms_over_max", "generate", 400, "seed", 2,
        lambda c, s: Call("/generate/json", json=generate_body(MAX_SEED - 2, num_waveforms=4))),
    bad("strength_2", "transform", 400, "strength", 2,
        lambda c, s: Call("/transform", data=transform_fields(s, strength=2), files=[wav(c.wav_1s)])),
    bad("unknown_field_json", "generate", 400, "durations", 2,
        lambda c, s: Call("/generate/json", json=generate_body(s, durations=5))),
    bad("unknown_field_form", "critique", 400, "colour", 2,
        lambda c, s: Call("/critique", data=form(prompt="x", colour="red", max_new_tokens=8))),
    # ---- bad: the wrong body ---------------------------------------------------------------------------------
    bad("content_type_text_plain", "generate", 415, "Content-Type", 2,
        lambda c, s: Call("/generate", content=b"prompt=rain", headers={"content-type": "text/plain"})),
    bad("content_type_json_to_form", "transform", 415, "Content-Type", 2,
        lambda c, s: Call("/transform/json", json={"prompt": "rain", "audio": "clip.wav"})),
    bad("content_type_xml", "critique", 415, "Content-Type", 1,
        lambda c, s: Call("/critique", content=b"<prompt/>", headers={"content-type": "application/xml"})),
    bad("invalid_json", "generate", 400, "body", 1,
        lambda c, s: Call("/generate", content=b'{"prompt": ', headers=JSON)),
    bad("multipart_no_boundary", "transform", 400, "body", 2,
        lambda c, s: Call("/transform", content=b"--b\r\n", headers={"content-type": "multipart/form-data"})),
    bad("multipart_garbage", "critique", 400, ("body", "prompt"), 2,
        lambda c, s: Call("/critique", content=random.Random(s).randbytes(600), headers=MULTIPART)),
    bad("content_length_1gb", "transform", 413, "body", 2,
        lambda c, s: Call("/transform/json", content=b"--b\r\n", headers=MULTIPART, declared_length=10**9)),
    bad("content_length_2mib_json", "generate", 413, "body", 1,
        lambda c, s: Call("/generate", content=b"{", headers=JSON, declared_length=2 * 2**20)),
    bad("too_many_fields", "critique", 400, "body", 2,
        lambda c, s: Call("/critique", data=form(prompt="x", **{f"field{i}": i for i in range(70)}))),
    bad("too_many_files", "transform", 400, "body", 1,
        lambda c, s: Call("/transform", data=transform_fields(s), files=[wav(c.wav_1s, f"{i}.wav") for i in range(5)])),
    # ---- bad: uploads ----------------------------------------------------------------------------------------
    bad("text_in_file_field", "transform", 400, "audio", 2,
        lambda c, s: Call("/transform", data=transform_fields(s, audio="hello"))),
    bad("url_in_file_field_critique", "critique", 400, "audio", 1,
        lambda c, s: Call("/critique", data=form(audio="http://127.0.0.1:9/clip.wav", max_new_tokens=8))),
    bad("non_audio_upload", "transform", 415, "audio", 2,
        lambda c, s: Call("/transform", data=transform_fields(s), files=[("audio", ("a.gif", c.gif, "image/gif"))])),
    bad("non_audio_upload_critique", "critique", 415, "audio", 1,
        lambda c, s: Call("/critique", data=form(max_new_tokens=8), files=[wav(c.pdf, "take.wav")])),
    bad("flac_8ch_655khz", "transform", 400, "audio", 2,
        lambda c, s: Call("/transform/json", data=transform_fields(s), files=flac_8ch(c))),
    bad("flac_8ch_655khz_critique", "critique", 400, "audio", 1,
        lambda c, s: Call("/critique", data=form(max_new_tokens=8), files=flac_8ch(c))),
    bad("clip_too_short", "transform", 400, "audio", 2,
        lambda c, s: Call("/transform", data=transform_fields(s), files=[wav(c.wav_half_s)])),
)
# fmt: on

KIND_BY_NAME = {k.name: k for k in KINDS}


def make_mix(requests: int, seed: int) -> list[tuple[Kind, int]]:
    """The request list: every kind at least once (when `requests` allows), the rest drawn by weight, shuffled;
    the same `requests` and `seed` always give the same list (kinds and per-request seeds)."""
    rng = random.Random(seed)
    kinds = list(KINDS[:requests])
    kinds += rng.choices(KINDS, weights=[k.weight for k in KINDS], k=requests - len(kinds))
    rng.shuffle(kinds)
    return [(kind, rng.randrange(0, 1_000_000)) for kind in kinds]


def warmup_mix(requests: int, seed: int) -> list[tuple[Kind, int]]:
    """Good requests only, cycling the good kinds."""
    good = [k for k in KINDS if k.good]
    rng = random.Random(seed + 1)
    return [(good[i % len(good)], rng.randrange(0, 1_000_000)) for i in range(requests)]


# ---- sending and judging ----------------------------------------------------------------


@dataclass
class Outcome:
    index: int
    kind: str
    status: int  # 0: no HTTP answer (transport error)
    latency_s: float
    started_s: float  # when it was sent, seconds into the run
    problem: str | None = None  # why this answer is not what the kind expects; None when it is
    retryable: bool = False  # a good request answered 503 with Retry-After
    error_shape_ok: bool | None = None  # for status >= 400: the body has the ErrorResponse shape


def send_raw(base: str, call: Call, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """A request whose Content-Length header is not the body's length (httpx would refuse to send it)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.putrequest("POST", call.route)
        for name, value in (call.headers or {}).items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(call.declared_length))
        connection.endheaders(call.content or b"")
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def send(client: httpx.Client, base: str, call: Call) -> tuple[int, dict[str, str], bytes]:
    if call.declared_length is not None:
        return send_raw(base, call, REQUEST_TIMEOUT_S)
    response = client.post(
        f"{base}{call.route}",
        json=call.json,
        data=call.data,
        files=call.files,
        content=call.content,
        headers=call.headers,
    )
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content


def error_shape_problem(body: bytes, status: int) -> str | None:
    """None when `body` is {"error": str, "kind": str, "detail": list} with a kind that matches `status`."""
    try:
        data = json.loads(body)
    except ValueError:
        return f"error body is not JSON: {body[:120]!r}"
    if not isinstance(data, dict) or set(data) != ERROR_KEYS:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        return f"error body keys {keys}, not {sorted(ERROR_KEYS)}"
    if not (isinstance(data["error"], str) and isinstance(data["kind"], str) and isinstance(data["detail"], list)):
        return "error body fields have the wrong types"
    if STATUS_OF_KIND.get(data["kind"]) != status:
        return f"kind {data['kind']!r} does not match status {status}"
    return None


def judge(kind: Kind, status: int, headers: dict[str, str], body: bytes) -> tuple[str | None, bool, bool | None]:
    """(problem or None, retryable, error shape ok) for one answer."""
    shape_problem = error_shape_problem(body, status) if status >= 400 else None
    shape_ok = None if status < 400 else shape_problem is None
    if kind.good:
        if status == 503 and "retry-after" in headers:
            return shape_problem, True, shape_ok
        if status != 200:
            return f"good request answered {status}: {body[:200]!r}", False, shape_ok
        if kind.answer == "audio":
            if not headers.get("content-type", "").startswith("audio/") or body[:4] not in (b"RIFF", b"fLaC"):
                return f"not an audio file: {headers.get('content-type')} {body[:16]!r}", False, shape_ok
        else:
            try:
                data = json.loads(body)
            except ValueError:
                return f"answer is not JSON: {body[:120]!r}", False, shape_ok
            if not isinstance(data, dict) or kind.answer not in data:
                return f"answer lacks {kind.answer!r}: {body[:200]!r}", False, shape_ok
        return None, False, shape_ok
    if status != kind.expect:
        return f"expected {kind.expect}, got {status}: {body[:200]!r}", False, shape_ok
    if shape_problem is not None:
        return shape_problem, False, False
    detail = json.loads(body)["detail"]
    named = [(d.get("loc") or [None])[0] for d in detail if isinstance(d, dict)]
    accepted = kind.field if isinstance(kind.field, tuple) else (kind.field,)
    if not set(named) & set(accepted):
        return f"detail names {named}, not {' or '.join(accepted)}", False, True
    return None, False, True


def drive(base: str, mix: list[tuple[Kind, int]], concurrency: int, clips: Clips) -> tuple[list[Outcome], float]:
    """Closed loop: `concurrency` workers take the next request of the mix until all are sent."""
    next_index = iter(range(len(mix)))
    lock = threading.Lock()
    outcomes: list[Outcome] = []

    def worker() -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                kind, seed = mix[i]
                call = kind.build(clips, seed)
                started = time.perf_counter()
                try:
                    status, headers, body = send(client, base, call)
                except (httpx.HTTPError, OSError, http.client.HTTPException) as exc:
                    outcome = Outcome(
                        i, kind.name, 0, time.perf_counter() - started, started - began, f"{type(exc).__name__}: {exc}"
                    )
                else:
                    latency = time.perf_counter() - started
                    problem, retryable, shape_ok = judge(kind, status, headers, body)
                    outcome = Outcome(i, kind.name, status, latency, started - began, problem, retryable, shape_ok)
                with lock:
                    outcomes.append(outcome)

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
    for future in futures:
        future.result()
    return sorted(outcomes, key=lambda o: o.index), time.perf_counter() - began


# ---- the server's processes and their memory ----------------------------------------------

ROLES = (
    ("front", "--service-name audio-studio"),
    ("audioldm2-runner", "--service-name audioldm2-runner"),
    ("music-flamingo-runner", "--service-name music-flamingo-runner"),
)


def role_of(cmdline: list[str]) -> str | None:
    joined = " ".join(cmdline)
    for role, marker in ROLES:
        if marker in joined:
            return role
    return None


def server_processes(root_pid: int) -> dict[str, psutil.Process]:
    """The `bentoml serve` arbiter and its workers, by role."""
    root = psutil.Process(root_pid)
    found = {"arbiter": root}
    for child in root.children(recursive=True):
        try:
            role = role_of(child.cmdline())
        except psutil.Error:
            continue
        if role is not None:
            found[role] = child
    missing = [role for role, _ in ROLES if role not in found]
    if missing:
        raise RuntimeError(f"no {', '.join(missing)} process under pid {root_pid}")
    return found


def arbiter_pid_for_port(port: int) -> int:
    """The pid of the `bentoml serve ... --port <port>` command (a server this script did not start)."""
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "serve" in cmdline and "--port" in cmdline:
            at = cmdline.index("--port")
            if at + 1 < len(cmdline) and cmdline[at + 1] == str(port) and any("bentoml" in c for c in cmdline):
                return process.info["pid"]
    raise RuntimeError(f"no `bentoml serve --port {port}` process on this machine")


def rss(processes: dict[str, psutil.Process]) -> dict[str, int]:
    return {role: process.memory_info().rss for role, process in processes.items()}


class PeakMemory:
    """Samples every process's RSS in a thread while the load runs; keeps the highest of each, and each one's
    last reading in every tenth of the run (growth that levels off, or growth that keeps going)."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.peak = rss(processes)
        self.samples = 0
        self.series: list[tuple[float, dict[str, int]]] = []
        self.lost: dict[str, float] = {}  # processes that disappeared (a crash or a restart): seconds into the load
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            now: dict[str, int] = {}
            for role, process in self.processes.items():
                try:
                    now[role] = process.memory_info().rss
                except psutil.Error:
                    self.lost.setdefault(role, round(time.monotonic() - self.started, 2))
                else:
                    self.peak[role] = max(self.peak[role], now[role])
            self.series.append((time.monotonic() - self.started, now))
            self.samples += 1

    def deciles(self, wall_s: float) -> dict[str, list[int | None]]:
        """Per process, its RSS at the end of each tenth of the load (the last sample in it)."""
        out: dict[str, list[int | None]] = {role: [None] * 10 for role in self.processes}
        for t, now in self.series:
            tenth = min(9, int(10 * t / wall_s)) if wall_s > 0 else 9
            for role, value in now.items():
                out[role][tenth] = value
        return out

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- one run ---------------------------------------------------------------------------------------


def latency_ms(outcomes: list[Outcome]) -> dict[str, float | None]:
    return {
        k: None if v is None else round(1000 * v, 1) for k, v in percentiles([o.latency_s for o in outcomes]).items()
    }


def run_edge_load(
    base: str,
    processes: dict[str, psutil.Process],
    requests: int = DEFAULT_REQUESTS,
    concurrency: int = DEFAULT_CONCURRENCY,
    seed: int = DEFAULT_SEED,
    warmup: int | None = None,
    settle_s: float = DEFAULT_SETTLE_S,
    memory_tolerance: float = DEFAULT_MEMORY_TOLERANCE,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Warm up, measure memory, send the mix, measure memory again; everything the checks need, as JSON."""
    clips = Clips()
    warmup = 2 * concurrency if warmup is None else warmup
    pids = {role: p.pid for role, p in processes.items()}
    log(f"warm-up: {warmup} good requests at concurrency {concurrency}")
    warm, warm_wall = drive(base, warmup_mix(warmup, seed), concurrency, clips)
    time.sleep(settle_s)
    before = rss(processes)
    mix = make_mix(requests, seed)
    log(f"load: {requests} requests ({sum(k.good for k, _ in mix)} good) at concurrency {concurrency}, seed {seed}")
    with PeakMemory(processes) as peak:
        outcomes, wall = drive(base, mix, concurrency, clips)
    log(f"load done in {wall:.1f} s; memory again in {settle_s:g} s")
    time.sleep(settle_s)
    lost = dict(peak.lost)
    after: dict[str, int] = {}
    for role, process in processes.items():
        try:
            after[role] = process.memory_info().rss
        except psutil.Error:
            lost.setdefault(role, round(time.monotonic() - peak.started, 2))
    deciles = peak.deciles(wall)
    memory = {
        role: {
            "pid": pids[role],
            "before_bytes": before[role],
            "peak_bytes": peak.peak[role],
            "after_bytes": after.get(role),
            "change": None if role not in after else round(after[role] / before[role] - 1, 4),
            "during_load_by_tenth_bytes": deciles[role],
            "within_tolerance": role in after and after[role] <= before[role] * (1 + memory_tolerance),
        }
        for role in processes
    }

    by_kind: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        mine = [o for o in outcomes if o.kind == kind.name]
        if not mine:
            continue
        by_kind[kind.name] = {
            "api": kind.api,
            "good": kind.good,
            "expect": kind.expect,
            "field": kind.field,
            "requests": len(mine),
            "statuses": dict(sorted(Counter(str(o.status) for o in mine).items())),
            "as_expected": sum(o.problem is None for o in mine),
            "retryable": sum(o.retryable for o in mine),
            "latency_ms": latency_ms(mine),
        }
    good = [o for o in outcomes if KIND_BY_NAME[o.kind].good]
    bad = [o for o in outcomes if not KIND_BY_NAME[o.kind].good]
    transport = [o for o in outcomes if o.status == 0]
    errors = [o for o in outcomes if o.status >= 400]
    report: dict[str, Any] = {
        "config": {
            "requests": requests,
            "concurrency": concurrency,
            "seed": seed,
            "warmup_requests": warmup,
            "settle_s": settle_s,
            "memory_tolerance": memory_tolerance,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "memory_sample_s": MEMORY_SAMPLE_S,
        },
        "warmup": {
            "requests": len(warm),
            "wall_s": round(warm_wall, 2),
            "statuses": dict(sorted(Counter(str(o.status) for o in warm).items())),
        },
        "load": {
            "requests_sent": len(mix),
            "answers": len(outcomes) - len(transport),
            "transport_errors": len(transport),
            "wall_s": round(wall, 2),
            "throughput_rps": round(len(outcomes) / wall, 2),
            "good_throughput_rps": round(sum(o.status == 200 for o in good) / wall, 2),
            "statuses": dict(sorted(Counter(str(o.status) for o in outcomes).items())),
            "good": {
                "requests": len(good),
                "statuses": dict(sorted(Counter(str(o.status) for o in good).items())),
                "retryable_503": sum(o.retryable for o in good),
                "latency_ms": latency_ms(good),
            },
            "bad": {
                "requests": len(bad),
                "statuses": dict(sorted(Counter(str(o.status) for o in bad).items())),
                "latency_ms": latency_ms(bad),
            },
            "error_bodies": len(errors),
            "error_bodies_shape_ok": sum(bool(o.error_shape_ok) for o in errors),
            "server_errors_5xx": sum(o.status >= 500 for o in outcomes),
        },
        "by_kind": by_kind,
        "memory": memory,
        "memory_samples": peak.samples,
        "lost_processes": lost,
        "problems": [
            {"index": o.index, "kind": o.kind, "status": o.status, "at_s": round(o.started_s, 2), "problem": o.problem}
            for o in outcomes
            if o.problem is not None
        ][:50],
        "kinds_never_drawn": [k.name for k in KINDS if k.name not in by_kind],
    }
    report["checks"] = checks(report, good, bad)
    return report


def checks(report: dict[str, Any], good: list[Outcome], bad: list[Outcome]) -> dict[str, dict[str, Any]]:
    load, memory = report["load"], report["memory"]
    tolerance = report["config"]["memory_tolerance"]
    good_failed = [o for o in good if o.problem is not None or o.status == 0]
    bad_failed = [o for o in bad if o.problem is not None or o.status == 0]
    return {
        "good_requests_succeed_or_retryable": {
            "ok": not good_failed,
            "detail": f"{len(good) - len(good_failed)}/{len(good)} answered 200 with a body of the route's kind "
            f"or 503 with Retry-After ({load['good']['retryable_503']} of those)",
        },
        "bad_requests_get_expected_4xx": {
            "ok": not bad_failed,
            "detail": f"{len(bad) - len(bad_failed)}/{len(bad)} answered the expected 4xx naming the field",
        },
        "no_5xx_except_retryable": {
            "ok": load["server_errors_5xx"] == load["good"]["retryable_503"],
            "detail": f"{load['server_errors_5xx']} 5xx, {load['good']['retryable_503']} of them 503 + Retry-After "
            "to good requests",
        },
        "error_bodies_have_the_shape": {
            "ok": load["error_bodies_shape_ok"] == load["error_bodies"],
            "detail": f"{load['error_bodies_shape_ok']}/{load['error_bodies']} error bodies are "
            '{"error": str, "kind": str, "detail": list} with a kind matching the status',
        },
        "no_response_lost": {
            "ok": load["transport_errors"] == 0 and load["answers"] == load["requests_sent"],
            "detail": f"{load['answers']}/{load['requests_sent']} got an HTTP answer; "
            f"{load['transport_errors']} transport errors",
        },
        "memory_back_within_tolerance": {
            "ok": all(m["within_tolerance"] for m in memory.values()) and not report["lost_processes"],
            "detail": ", ".join(
                f"{role} {m['change']:+.1%}" if m["change"] is not None else f"{role} gone"
                for role, m in memory.items()
            )
            + f" (limit +{tolerance:.0%})"
            + (f"; processes lost: {report['lost_processes']}" if report["lost_processes"] else ""),
        },
    }


def failed_checks(report: dict[str, Any]) -> list[str]:
    return [f"{name}: {c['detail']}" for name, c in report["checks"].items() if not c["ok"]]


# ---- a server of our own -------------------------------------------------------------------------


def log_stats(log_path: Path) -> dict[str, Any]:
    """Counts from the server's log: faults, and how often the front re-sent a runner call whose connection
    BentoML's proxy dropped (each re-send leaves the first attempt's job running on the runner)."""
    lines = log_path.read_text(errors="replace").splitlines()
    runner_calls = Counter(
        f"{m.group(1)} {m.group(2)}"
        for m in (re.search(r"\[service:([a-z0-9-]+):\d+\].*path=(/[a-z]+),", line) for line in lines)
        if m
    )
    return {
        "tracebacks": sum("Traceback (most recent call last)" in line for line in lines),
        "error_lines": sum("[ERROR]" in line for line in lines),
        "warning_lines": sum("[WARNING]" in line for line in lines),
        "runner_calls_resent": sum("runner connection dropped" in line for line in lines),
        "runner_calls": dict(sorted(runner_calls.items())),
    }


# ---- the report ---------------------------------------------------------------------------------------


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def markdown(report: dict[str, Any]) -> str:
    config, load = report["config"], report["load"]
    lines = ["# Edge load test (tiny profile)", "", *header_markdown(report)]
    if report.get("source"):
        s = report["source"]
        lines.append(
            f"- source: commit {s['commit'][:12]}" + (f", uncommitted: {', '.join(s['dirty'])}" if s["dirty"] else "")
        )
    lines += [
        f"- mix: {config['requests']} requests at concurrency {config['concurrency']} (closed loop), seed "
        f"{config['seed']}; warm-up {config['warmup_requests']} good requests; memory {config['settle_s']:g} s after "
        f"the warm-up and after the load, peak sampled every {config['memory_sample_s']:g} s",
        "",
        "## Checks",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {'pass' if c['ok'] else '**FAIL**'} | {c['detail']} |" for name, c in report["checks"].items()
    ]
    lines += [
        "",
        "## Load",
        "",
        f"- wall {load['wall_s']:.1f} s; throughput {load['throughput_rps']:.2f} req/s "
        f"(good answered 200: {load['good_throughput_rps']:.2f} req/s)",
        f"- statuses: {load['statuses']}; transport errors: {load['transport_errors']}",
        f"- good: {load['good']['requests']} requests, statuses {load['good']['statuses']}, "
        f"p50 {fmt(load['good']['latency_ms']['p50'], 0)} ms, p95 {fmt(load['good']['latency_ms']['p95'], 0)} ms",
        f"- bad: {load['bad']['requests']} requests, statuses {load['bad']['statuses']}, "
        f"p50 {fmt(load['bad']['latency_ms']['p50'], 0)} ms, p95 {fmt(load['bad']['latency_ms']['p95'], 0)} ms",
        "",
        "| class | api | expected | requests | statuses | as expected | p50 ms | p95 ms |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for name, k in report["by_kind"].items():
        fields = " or ".join(k["field"]) if isinstance(k["field"], list | tuple) else k["field"]
        expected = "200 / 503+Retry-After" if k["good"] else f"{k['expect']} `{fields}`"
        statuses = ", ".join(f"{s}: {n}" for s, n in k["statuses"].items())
        lines.append(
            f"| {name} | {k['api']} | {expected} | {k['requests']} | {statuses} | {k['as_expected']} "
            f"| {fmt(k['latency_ms']['p50'], 0)} | {fmt(k['latency_ms']['p95'], 0)} |"
        )
    lines += [
        "",
        "## Memory (RSS, MiB)",
        "",
        "| process | pid | after warm-up | peak during load | after load | change |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for role, m in report["memory"].items():
        change = "gone" if m["change"] is None else f"{m['change']:+.1%}"
        lines.append(
            f"| {role} | {m['pid']} | {mib(m['before_bytes'])} | {mib(m['peak_bytes'])} | {mib(m['after_bytes'])} "
            f"| {change} |"
        )
    lines += [
        "",
        "RSS during the load (MiB), the last sample in each tenth of it:",
        "",
        "| process | " + " | ".join(f"{10 * (i + 1)}%" for i in range(10)) + " |",
        "|---|" + "---:|" * 10,
    ]
    for role, m in report["memory"].items():
        lines.append(f"| {role} | " + " | ".join(mib(v) for v in m["during_load_by_tenth_bytes"]) + " |")
    if report.get("server"):
        s = report["server"]
        lines += [
            "",
            f"Server: started in {s['start_s']:.1f} s; stopped in {fmt(s['stop_s'], 1)} s"
            f"{' (forced: SIGKILL)' if s['stop_forced'] else ''}; its log: {s['log']['tracebacks']} tracebacks, "
            f"{s['log']['error_lines']} ERROR lines, {s['log']['warning_lines']} WARNING lines.",
            "",
            f"Runner calls in the server's log (warm-up and load): {s['log']['runner_calls']}; the front re-sent "
            f"{s['log']['runner_calls_resent']} calls whose connection BentoML's runner proxy dropped: the runners "
            f"ran {s['runner_jobs_beyond_requests']} jobs more than the good requests answered.",
        ]
    if report["problems"]:
        lines += ["", "Unexpected answers (first 10):", ""]
        lines += [
            f"- #{p['index']} {p['kind']} (sent at {p['at_s']:.1f} s): {p['status']}: {p['problem']}"
            for p in report["problems"][:10]
        ]
    lines.append("")
    return "\n".join(lines)


def source_state() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (another engineer may be editing)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": dirty}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="fixes the mix (kinds and request seeds)")
    parser.add_argument("--warmup", type=int, default=None, help="good requests before the first memory reading")
    parser.add_argument("--settle-s", type=float, default=DEFAULT_SETTLE_S)
    parser.add_argument("--memory-tolerance", type=float, default=DEFAULT_MEMORY_TOLERANCE)
    parser.add_argument("--url", help="a running server instead of starting one (its processes found by port)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for edge-load.json and .md")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    report: dict[str, Any] = header(None if argv is None else ["bench/edge_load.py", *argv])
    report["source"] = source_state()
    options = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seed": args.seed,
        "warmup": args.warmup,
        "settle_s": args.settle_s,
        "memory_tolerance": args.memory_tolerance,
        "log": log,
    }
    if args.url:
        port = urlsplit(args.url).port or 80
        report |= run_edge_load(args.url.rstrip("/"), server_processes(arbiter_pid_for_port(port)), **options)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-edge-load-") as tmp:
            log("starting bentoml serve (tiny profile)")
            started = time.monotonic()
            with serve(Path(tmp)) as server:
                start_s = time.monotonic() - started
                log(f"ready at {server.url} in {start_s:.1f} s")
                report |= run_edge_load(server.url, server_processes(server.process.pid), **options)
            kept_log = Path(tempfile.gettempdir()) / f"edge-load-serve-{time.strftime('%Y%m%dT%H%M%S')}.log"
            shutil.copyfile(server.log_path, kept_log)
            report["server"] = {
                "start_s": round(start_s, 2),
                "stop_s": server.stop_s,
                "stop_forced": server.stop_forced,
                "log": log_stats(server.log_path),
            }
            served = report["warmup"]["statuses"].get("200", 0) + report["load"]["good"]["statuses"].get("200", 0)
            jobs = sum(n for call, n in report["server"]["log"]["runner_calls"].items() if not call.endswith("/limits"))
            report["server"]["runner_jobs_beyond_requests"] = jobs - served
            log(f"server log kept at {kept_log}")
            if server.stop_forced or server.stop_s is None:
                log(f"server needed SIGKILL to stop; log tail:\n{server.log_path.read_text()[-3000:]}")
    write_report(args.out, "edge-load", report, markdown(report))
    print(markdown(report))
    failures = failed_checks(report)
    for failure in failures:
        log(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
