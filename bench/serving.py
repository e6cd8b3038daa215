"""Serving benchmark: adaptive batching on vs off, and the cost of the HTTP path, on the tiny profile.

Starts a real `bentoml serve service:AudioStudio` on 127.0.0.1 twice (AUDIO_STUDIO_BATCHING=true, then
false), drives POST /generate/json and POST /critique with a fixed request mix at several concurrency
levels (closed loop: each of `c` clients sends its next request when the previous one answered), and
reads the realised runner batch sizes from /metrics. Then compares the HTTP latency at concurrency 1
with the same jobs run in-process through the runners' own code, each family alone in a spawned process on
its model thread (bench/in_process.py; AudioLDM2: its step scheduler; Music Flamingo: its engine +
run_in_groups).

Tiny-profile numbers measure the serving path (HTTP, validation, transport, batching), not model speed:
see bench/fullsize.py for that. With AUDIO_STUDIO_PROFILE=random (bench/tiny_profile.py) the server and the
in-process runs load random-weight folders instead, e.g. full-size ones on a GPU (bench/gpu.sh).

    .venv/bin/python bench/serving.py            # full run, ~15 min on 2 CPU cores
    .venv/bin/python bench/serving.py --quick    # ~3 min, concurrency 1 and 8
    .venv/bin/python bench/serving.py --smoke    # the same code in about a minute: concurrency 1 and 2 (CI)
    .venv/bin/python bench/serving.py --gpu --one-server   # what bench/gpu.sh runs on full-size random weights
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
from bench.tiny_profile import PROFILE  # the tiny profile (or random folders), before any project import

# isort: split

import httpx
import psutil

from bench import served
from bench.common import DEFAULT_OUT, fmt, header, header_markdown, percentiles, write_report
from bench.in_process import (
    Flamingo,
    alone,
    batch_scaling,
    critique_job,
    load_audioldm2,
    no_second_openmp_team,
    timed,
)
from models.local_tokenizers import CORPUS
from presets import Preset
from schemas import CritiqueRequest, GenerateRequest, GenerationJob
from tests.audio_files import audio_file
from tests.metrics import PATTERN

SERVER_START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 600
CRITIQUE_CLIP_SECONDS = 30.0
# BentoML's dispatcher spends its first 11 calls fitting its latency model (2 skipped + 6 + 1 + 1 + 1 in
# bentoml/_internal/marshal/dispatcher.py), and in the last of them holds a lone request back waiting for
# a second and third one. Warm-up sends light requests one at a time until all 11 are done.
WARMUP_REQUESTS = 14
WARMUP_CONCURRENCY = 1
OPEN_LOOP_SEED = 7
OPEN_LOOP_MAX_IN_FLIGHT = 64  # client threads: above it, arrivals wait for a thread (reported as latency)
CEILING_SHARE_TARGET = 0.95  # batching on/off at the highest concurrency over the in-process ceiling
CEILING_MIX = {"generate": "generate mix (8 jobs, 2/5/10 s)", "critique": "critique mix (8 jobs)"}
DISPATCHER_TRAINING_CALLS = 11

# ---- the request mix ---------------------------------------------------------------

SOUND_PROMPTS = [line for line in CORPUS if not line.startswith(("Describe", "Give", "Compare", "What", "Low"))]
GENERATE_DURATIONS = (2.0, 5.0, 10.0, 5.0)  # seconds, cycled: 25% 2 s, 50% 5 s, 25% 10 s
TEXT_QUESTIONS = [
    "What instruments usually play a walking bass line?",
    "Suggest a practice routine for playing scales evenly at 120 BPM.",
    "What is the relative minor of E flat major?",
    "How do I count a bar of 7/8?",
]


@dataclass(frozen=True)
class Mix:
    """A fixed, documented request mix: request i of a level is always the same request."""

    steps: int  # AudioLDM2 denoising steps (DPM++)
    max_new_tokens: int  # Music Flamingo answer length budget

    def generate_body(self, i: int) -> dict[str, Any]:
        return {
            "prompt": SOUND_PROMPTS[i % len(SOUND_PROMPTS)],
            "duration": GENERATE_DURATIONS[i % len(GENERATE_DURATIONS)],
            "steps": self.steps,
            "scheduler": "dpmpp",
            "seed": 1000 + i,
        }

    def critique_fields(self, i: int) -> dict[str, Any]:
        """Even requests: a 30 s clip with the `feedback` preset; odd: a text-only question."""
        common = {"max_new_tokens": self.max_new_tokens, "seed": 2000 + i}
        if i % 2 == 0:
            return {**common, "preset": Preset.FEEDBACK.value}
        return {**common, "prompt": TEXT_QUESTIONS[(i // 2) % len(TEXT_QUESTIONS)]}

    def critique_has_audio(self, i: int) -> bool:
        return i % 2 == 0

    def describe(self) -> dict[str, Any]:
        return {
            "generate": f"POST /generate/json; prompt i cycles {len(SOUND_PROMPTS)} sound prompts; duration cycles "
            f"{list(GENERATE_DURATIONS)} s; {self.steps} DPM++ steps; guidance 3.5 (default); 1 waveform; seed 1000+i",
            "critique": f"POST /critique multipart; even i: a {CRITIQUE_CLIP_SECONDS:g} s 44.1 kHz stereo WAV "
            f"(5.3 MB) with preset `feedback`; odd i: text-only question; max_new_tokens {self.max_new_tokens}; "
            "greedy; seed 2000+i",
        }


@dataclass(frozen=True)
class Plan:
    size: str  # full, quick, smoke or gpu
    concurrency: tuple[int, ...]
    mix: Mix
    warmup_mix: Mix
    level_deadline_s: float  # a level stops sending new requests after this long
    # Open loop: Poisson arrivals at these fractions of the closed loop's throughput at the highest concurrency
    # with batching on (measured first, then the same rates with batching off).
    open_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25)
    ceiling_repeats: int = 5  # in-process batch vs one by one, repeated: the median and the spread (0: none)
    # Each level is run this many times, on and off in turn on two servers up together, so drift on a shared
    # machine hits both alike; a level's throughput is the median, on/off the median of the paired ratios.
    level_repeats: int = 1
    batching_modes: tuple[bool, ...] = (True, False)  # one server each
    traced: bool = True  # a third server traces every request: where one request's time goes

    def requests_at(self, concurrency: int) -> int:
        """A fixed number of requests per level, so a level's length is bounded and comparable on/off."""
        per_client, least = {"smoke": (2, 2), "quick": (4, 8), "full": (4, 16), "gpu": (1, 4)}[self.size]
        return max(least, per_client * concurrency)

    def one_server(self) -> Plan:
        """Batching on only: the HTTP path against in-process, with no batching-off server, open loop, traced
        server or ceilings (what a GPU part of bench/gpu.sh has time for)."""
        return replace(self, batching_modes=(True,), open_fractions=(), traced=False, ceiling_repeats=0)


def make_plan(size: str) -> Plan:
    warmup = Mix(steps=2, max_new_tokens=4)
    if size == "smoke":
        return Plan(size, (1, 2), warmup, warmup, 60.0, (1.0,), 1)
    if size == "quick":
        return Plan(size, (1, 8), Mix(steps=5, max_new_tokens=16), warmup, 120.0, (0.5, 1.0), 3, level_repeats=3)
    if size == "gpu":  # full-size models: the serving configuration's steps, a short critique, few requests
        return Plan(size, (1, 8), Mix(steps=25, max_new_tokens=32), warmup, 120.0)
    return Plan(size, (1, 4, 8, 16), Mix(steps=25, max_new_tokens=64), warmup, 600.0, level_repeats=2)


def validate_plan(plan: Plan) -> None:
    """Every body of the mix is a valid request of the public schemas (a mix that rots fails here, not at 400)."""
    for i in range(plan.requests_at(max(plan.concurrency))):
        GenerateRequest.model_validate_json(json.dumps(plan.mix.generate_body(i)))  # sent as JSON
        fields = plan.mix.critique_fields(i)
        CritiqueRequest.model_validate(  # sent as a form: text fields parse into their types
            {**fields, "audio": [Path("clip.wav")] if plan.mix.critique_has_audio(i) else []}, strict=False
        )


# ---- the server ----------------------------------------------------------------------


@contextmanager
def serve(batching: bool, workdir: Path, extra_env: dict[str, str] | None = None) -> Iterator[served.Server]:
    """A real `bentoml serve` of the front and both runners, tiny profile, batching on or off; always stopped."""
    folder = workdir / f"batching-{'on' if batching else 'off'}{'-traced' if extra_env else ''}"
    folder.mkdir(parents=True, exist_ok=True)
    env = {"AUDIO_STUDIO_BATCHING": "true" if batching else "false", **(extra_env or {})}
    with served.serve(folder, env) as server:
        yield server


# ---- CPU by process ------------------------------------------------------------------

FRONT_SERVICE = "audio-studio"
RUNNER_SERVICE = {"generate": "audioldm2-runner", "critique": "music-flamingo-runner"}


def cpu_seconds(server: served.Server | None) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this benchmark's own process (the clients) and by each of
    the server's workers, by BentoML service name."""
    own = psutil.Process().cpu_times()
    seconds = {"client": own.user + own.system}
    for process in server.workers if server is not None else []:
        try:
            command, times = process.cmdline(), process.cpu_times()
        except psutil.Error:
            continue
        name = command[command.index("--service-name") + 1] if "--service-name" in command else "arbiter"
        seconds[name] = seconds.get(name, 0.0) + times.user + times.system
    return seconds


def cpu_by_role(before: dict[str, float], after: dict[str, float], api: str) -> dict[str, float]:
    """What a level used: the clients, the front, the API's runner, and the other processes together."""
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    roles = {"client": used.pop("client"), "front": used.pop(FRONT_SERVICE, 0.0)}
    roles["runner"] = used.pop(RUNNER_SERVICE[api], 0.0)
    return roles | {"other": sum(used.values())}


# ---- /metrics ------------------------------------------------------------------------

HISTOGRAM = PATTERN.replace("(bucket|count)", "(bucket|count|sum)")


@dataclass(frozen=True)
class Histogram:
    """bentoml_service_adaptive_batch_size for one runner method: batches, requests in them, cumulative buckets."""

    count: float
    total: float
    buckets: dict[float, float]

    def minus(self, before: Histogram) -> Histogram:
        return Histogram(
            self.count - before.count,
            self.total - before.total,
            {le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )

    def max_bucket(self) -> float | None:
        """Upper bound of the largest batch: the smallest `le` whose bucket holds every batch."""
        if self.count <= 0:
            return None
        return min(le for le, n in self.buckets.items() if n >= self.count)


def read_histogram(url: str, method: str) -> Histogram:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pattern = HISTOGRAM.replace("{method}", re.escape(method))
    count, total, buckets = 0.0, 0.0, {}
    for kind, le, value in re.findall(pattern, text):
        if kind == "count":
            count = float(value)
        elif kind == "sum":
            total = float(value)
        else:
            buckets[float(le)] = float(value)  # "+Inf" parses as inf
    return Histogram(count, total, buckets)


# ---- load generation -----------------------------------------------------------------


@dataclass
class Sample:
    index: int
    status: int
    latency_s: float
    timings: dict[str, float] = field(default_factory=dict)
    tokens: int | None = None
    error: str | None = None
    trace_id: str | None = None


class Client:
    """Sends request i of the mix for one API; one httpx.Client per thread."""

    def __init__(self, url: str, api: str, mix: Mix, clip: bytes, server: served.Server | None = None) -> None:
        """`server`: the one at `url`, whose processes' CPU each level records."""
        self.url, self.api, self.mix, self.clip, self.server = url, api, mix, clip, server
        self.local = threading.local()

    def _http(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(timeout=REQUEST_TIMEOUT_S)
        return self.local.client

    def send(self, i: int) -> Sample:
        started = time.perf_counter()
        try:
            if self.api == "generate":
                response = self._http().post(f"{self.url}/generate/json", json=self.mix.generate_body(i))
            else:
                data = {k: str(v) for k, v in self.mix.critique_fields(i).items()}
                files = {"audio": ("clip.wav", self.clip, "audio/wav")} if self.mix.critique_has_audio(i) else None
                response = self._http().post(f"{self.url}/critique", data=data, files=files)
        except httpx.HTTPError as exc:
            return Sample(i, 0, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        latency = time.perf_counter() - started
        if response.status_code != 200:
            return Sample(i, response.status_code, latency, error=response.text[:300])
        body = response.json()
        trace_id = response.headers.get("x-trace-id")
        return Sample(i, 200, latency, body["timings"], body.get("tokens_generated"), trace_id=trace_id)


def drive(client: Client, requests: int, concurrency: int, deadline_s: float) -> tuple[list[Sample], float, bool]:
    """Closed loop: `concurrency` workers take the next request index until all are sent or the deadline passes."""
    counter = itertools.count()
    lock = threading.Lock()
    samples: list[Sample] = []
    stop_at = time.monotonic() + deadline_s
    cut = threading.Event()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter)
            if i >= requests:
                return
            if time.monotonic() > stop_at:
                cut.set()
                return
            sample = client.send(i)
            with lock:
                samples.append(sample)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - started
    return sorted(samples, key=lambda s: s.index), wall, cut.is_set()


def drive_open(client: Client, requests: int, rate_rps: float, deadline_s: float) -> tuple[list[Sample], float, bool]:
    """Open loop, as vLLM's serving benchmark: request i is sent at its Poisson arrival time (a fixed seed, so
    on and off see the same arrivals) whether or not earlier ones answered; none is sent after the deadline."""
    rng = random.Random(OPEN_LOOP_SEED)
    arrivals = list(itertools.accumulate(rng.expovariate(rate_rps) for _ in range(requests)))
    started = time.perf_counter()
    futures = []
    with ThreadPoolExecutor(min(requests, OPEN_LOOP_MAX_IN_FLIGHT)) as pool:
        for i, at in enumerate(arrivals):
            if at > deadline_s:
                break
            time.sleep(max(0.0, started + at - time.perf_counter()))
            futures.append(pool.submit(client.send, i))
        samples = [future.result() for future in futures]
    return samples, time.perf_counter() - started, len(futures) < requests


@dataclass(frozen=True)
class Load:
    """One level: `closed` with `value` clients, or `open` with `value` requests per second."""

    loop: str
    value: float

    def drive(self, client: Client, requests: int, deadline_s: float) -> tuple[list[Sample], float, bool]:
        if self.loop == "closed":
            return drive(client, requests, int(self.value), deadline_s)
        return drive_open(client, requests, self.value, deadline_s)


RUNNER_METHOD = {"generate": "generate", "critique": "critique"}


class CpuShare:
    """CPU time that processes outside this benchmark (other sessions on a shared machine) used meanwhile.

    A benchmark on 2 cores is only as good as the machine is quiet: every level records it, and the
    report flags levels where others used more than a fifth of a core on average.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.system, self.ours = self._system(), self._ours()

    @staticmethod
    def _system() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    @staticmethod
    def _ours() -> float:
        total = 0.0
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()  # with the children it has waited for (a finished in-process child)
                total += times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                pass
        return total

    def foreign(self) -> dict[str, float | bool]:
        wall = time.monotonic() - self.started
        others = max(0.0, (self._system() - self.system) - (self._ours() - self.ours))
        cores = others / wall if wall > 0 else 0.0
        return {"cpu_s": round(others, 2), "cores": round(cores, 3), "contended": cores > 0.2}


def measure_level(client: Client, load: Load, requests: int, deadline_s: float) -> dict[str, Any]:
    before = read_histogram(client.url, RUNNER_METHOD[client.api])
    cpu, used_before = CpuShare(), cpu_seconds(client.server)
    samples, wall, cut = load.drive(client, requests, deadline_s)
    contention, used = cpu.foreign(), cpu_by_role(used_before, cpu_seconds(client.server), client.api)
    delta = read_histogram(client.url, RUNNER_METHOD[client.api]).minus(before)
    ok = [s for s in samples if s.status == 200]
    seen_batches = [s.timings["batch_size"] for s in ok]
    groups = [s.timings["group_size"] for s in ok]
    return {
        "loop": load.loop,
        "concurrency": int(load.value) if load.loop == "closed" else None,
        "rate_rps": load.value if load.loop == "open" else None,
        "requests": len(samples),
        "ok": len(ok),
        "errors": [f"#{s.index} {s.status}: {s.error}" for s in samples if s.status != 200][:5],
        "error_statuses": dict(Counter(str(s.status) for s in samples if s.status != 200)),  # 0: client-side
        "cut_by_deadline": cut,
        "wall_s": wall,
        "foreign_cpu": contention,
        "cpu_s": used,
        "throughput_rps": len(ok) / wall if wall > 0 else None,
        "latency_ms": {k: None if v is None else 1000 * v for k, v in percentiles([s.latency_s for s in ok]).items()},
        "latencies_s": [round(s.latency_s, 4) for s in ok],
        "runner_inference_s": [round(s.timings["inference_s"], 4) for s in ok],
        "tokens_generated": sum(s.tokens or 0 for s in ok) if client.api == "critique" else None,
        "batches": {
            # From BentoML's histogram (runner side); no adaptive batcher, no histogram, when batching is off.
            "metrics_batches": delta.count,
            "metrics_mean_size": delta.total / delta.count if delta.count > 0 else None,
            "metrics_max_bucket": delta.max_bucket(),
            # From each response's timings: the batch it was served in, and its group within that batch.
            "request_weighted_mean_size": sum(seen_batches) / len(seen_batches) if seen_batches else None,
            "max_size_seen": max(seen_batches, default=None),
            "mean_group_size": sum(groups) / len(groups) if groups else None,
        },
    }


def warm_up(client: Client, warmup_mix: Mix) -> float:
    """Light requests one at a time: first calls, and BentoML's dispatcher training; returns runner batches so far."""
    light = Client(client.url, client.api, warmup_mix, client.clip)
    samples, _, _ = drive(light, WARMUP_REQUESTS, WARMUP_CONCURRENCY, SERVER_START_TIMEOUT_S)
    bad = [s for s in samples if s.status != 200]
    if bad:
        raise RuntimeError(f"warm-up of {client.api} failed: {bad[0].status} {bad[0].error}")
    return read_histogram(client.url, RUNNER_METHOD[client.api]).count


def run_servers(
    plan: Plan, clip: bytes, workdir: Path, direct: Direct, log: Callable[[str], None]
) -> tuple[list[dict], dict]:
    """One `bentoml serve` per batching mode, up together. Per API: warm each up, then the closed-loop levels,
    then the open-loop rates, every level repeated with the modes in turn (and at concurrency 1, the same jobs
    in-process after each repeat). The open rates are fractions of the first mode's (batching on) median
    throughput at the highest concurrency, so every mode sees the same arrivals. Returns the levels' rows and the
    open rates."""
    rows: list[dict] = []
    open_rates: dict[str, list[float]] = {}
    with ExitStack() as servers:
        started = {batching: servers.enter_context(serve(batching, workdir)) for batching in plan.batching_modes}
        for api in ("generate", "critique"):
            clients = {batching: Client(s.url, api, plan.mix, clip, s) for batching, s in started.items()}
            for batching, client in clients.items():
                batches = warm_up(client, plan.warmup_mix)
                if batching and batches < DISPATCHER_TRAINING_CALLS:
                    log(f"WARNING: only {batches:.0f} runner batches after warm-up; the dispatcher may be training")
                log(f"batching={batching} {api}: warmed up ({batches:.0f} runner batches so far)")
            for load in (Load("closed", c) for c in plan.concurrency):
                rows += measure_load(clients, load, plan, api, log, direct if load.value == 1 else None)
            first = rows[-len(clients)]["throughput_rps"]  # the first mode's, at the highest concurrency
            open_rates[api] = [round(f * first, 3) for f in plan.open_fractions] if first else []
            for rate in open_rates[api]:
                rows += measure_load(clients, Load("open", rate), plan, api, log)
    return rows, open_rates


def measure_load(
    clients: dict[bool, Client],
    load: Load,
    plan: Plan,
    api: str,
    log: Callable[[str], None],
    direct: Direct | None = None,
) -> list[dict]:
    """One level on every server, `plan.level_repeats` times with the servers in turn (then the same jobs
    in-process, given `direct`); one merged row per server."""
    requests = plan.requests_at(max(plan.concurrency) if load.loop == "open" else int(load.value))
    repeats: dict[bool, list[dict]] = {batching: [] for batching in clients}
    in_process: list[list[float]] = []
    for _ in range(plan.level_repeats):
        for batching, client in clients.items():
            repeats[batching].append(measure_level(client, load, requests, plan.level_deadline_s))
        if direct is not None:
            in_process.append(direct.singles(api, requests))
    rows = [
        merge_repeats(runs) | {"api": api, "batching": batching, "in_process_repeats_s": in_process}
        for batching, runs in repeats.items()
    ]
    for row in rows:
        log(
            f"batching={row['batching']} {api} {load.loop} {fmt(load.value)}: {row['ok']}/{row['requests']} ok, "
            f"{fmt(row['throughput_rps'])} req/s (repeats {[fmt(t) for t in row['throughput_repeats_rps']]}), "
            f"p50 {fmt(row['latency_ms']['p50'], 0)} ms, mean batch {fmt(row['batches']['metrics_mean_size'])}, "
            f"others' CPU {row['foreign_cpu']['cores']:.2f} cores"
        )
    return rows


def merge_repeats(runs: list[dict]) -> dict[str, Any]:
    """The repeats of one level on one server as one row: the median throughput (each repeat's kept for the
    paired on/off ratios), latencies and batches over every request of every repeat."""
    merged = dict(runs[0])
    latencies = [s for run in runs for s in run["latencies_s"]]
    batches = [run["batches"] for run in runs]
    count = sum(b["metrics_batches"] for b in batches)
    total = sum(b["metrics_batches"] * (b["metrics_mean_size"] or 0) for b in batches)
    merged |= {
        "requests": sum(run["requests"] for run in runs),
        "ok": sum(run["ok"] for run in runs),
        "errors": [e for run in runs for e in run["errors"]][:5],
        "error_statuses": dict(sum((Counter(run["error_statuses"]) for run in runs), Counter())),
        "cut_by_deadline": any(run["cut_by_deadline"] for run in runs),
        "wall_s": sum(run["wall_s"] for run in runs),
        "foreign_cpu": max((run["foreign_cpu"] for run in runs), key=lambda f: f["cores"]),
        "cpu_s": {role: sum(run["cpu_s"][role] for run in runs) for role in runs[0]["cpu_s"]},
        "throughput_repeats_rps": [run["throughput_rps"] for run in runs],
        "throughput_rps": median_or_none([run["throughput_rps"] for run in runs]),
        "latency_ms": {k: None if v is None else 1000 * v for k, v in percentiles(latencies).items()},
        "latencies_s": latencies,
        "latencies_by_repeat_s": [run["latencies_s"] for run in runs],
        "runner_inference_s": [s for run in runs for s in run["runner_inference_s"]],
        "tokens_generated": None if runs[0]["tokens_generated"] is None else sum(r["tokens_generated"] for r in runs),
        "batches": {
            "metrics_batches": count,
            "metrics_mean_size": total / count if count > 0 else None,
            "metrics_max_bucket": max((b["metrics_max_bucket"] or 0 for b in batches), default=None) or None,
            "request_weighted_mean_size": median_or_none([b["request_weighted_mean_size"] for b in batches]),
            "max_size_seen": max((b["max_size_seen"] or 0 for b in batches), default=None) or None,
            "mean_group_size": median_or_none([b["mean_group_size"] for b in batches]),
        },
    }
    return merged


def median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# ---- where the time of one request goes ----------------------------------------------------


def breakdown(plan: Plan, clip: bytes, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Concurrency-1 requests on a server that traces every request to a local OTLP receiver: per API, the
    median time of each span (the front's and the runner's HTTP server spans, upload decoding, the runner's
    batch wait and model phases) and of the client's latency, per request over its own trace. A separate
    server: tracing costs a little itself (bench/access_cost.py measures how much)."""
    from tests.otlp_receiver import OTLPReceiver

    result: dict[str, Any] = {}
    with OTLPReceiver() as receiver:
        env = {"AUDIO_STUDIO_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with serve(True, workdir, env) as traced:
            for api in ("generate", "critique"):
                client = Client(traced.url, api, plan.mix, clip, traced)
                warm_up(client, plan.warmup_mix)
                samples, _, _ = drive(client, plan.requests_at(1), 1, plan.level_deadline_s)
                ok = [s for s in samples if s.status == 200 and s.trace_id]
                receiver.settled_count()
                per_span: dict[str, list[float]] = {}
                for sample in ok:
                    for name, ms in span_durations_ms(receiver.trace(sample.trace_id)).items():
                        per_span.setdefault(name, []).append(ms)
                result[api] = {
                    "requests": len(ok),
                    "client_p50_ms": 1000 * statistics.median(s.latency_s for s in ok) if ok else None,
                    "spans_p50_ms": {name: statistics.median(v) for name, v in sorted(per_span.items())},
                    "spans_seen_in": {name: len(v) for name, v in sorted(per_span.items())},
                }
                log(f"breakdown {api}: {len(ok)} traced requests, {len(per_span)} span names")
    return result


def span_durations_ms(spans: list[Any]) -> dict[str, float]:
    """One trace's spans by `service: name`, summed when a name repeats (e.g. one model phase per step)."""
    durations: dict[str, float] = {}
    for span in spans:
        key = f"{span.service}: {span.name}"
        durations[key] = durations.get(key, 0.0) + (span.end_ns - span.start_ns) / 1e6
    return durations


# ---- the same jobs in-process ----------------------------------------------------------


class Direct:
    """The in-process baselines: each family alone in a spawned process on its model thread (bench/in_process.py),
    kept loaded while the servers run, so the concurrency-1 jobs can run again between the HTTP runs of the same
    level: an overhead compares runs minutes apart otherwise, and single medians drift by 10-15 ms in that time."""

    def __init__(self, plan: Plan, clip: bytes) -> None:
        self.plan, self.clip = plan, clip
        self.children = {api: alone() for api in ("generate", "critique")}

    def measure(self, requests: int) -> dict[str, Any]:
        """The mix's concurrency-1 jobs one at a time, and the ceilings (same jobs and seeds as over HTTP)."""
        cpu = CpuShare()
        result = {"generate": self.children["generate"].submit(direct_generate, self.plan, requests).result()}
        result["critique"] = self.children["critique"].submit(direct_critique, self.plan, self.clip, requests).result()
        scaling = {**result["generate"].pop("batch_scaling"), **result["critique"].pop("batch_scaling")}
        return {**result, "batch_scaling": scaling, "foreign_cpu": cpu.foreign()}

    def singles(self, api: str, requests: int) -> list[float]:
        """The same concurrency-1 jobs again, one at a time."""
        return self.children[api].submit(direct_singles, api, requests).result()

    def close(self) -> None:
        for child in self.children.values():
            child.submit(close_direct).result()
            child.shutdown()


@dataclass(frozen=True)
class Loaded:
    """In a direct child: its family's batch runner, the level's jobs, and what stops its model thread."""

    run: Callable[[list[Any]], Any]
    jobs: list[Any]
    close: Callable[[], None] = lambda: None


LOADED: dict[str, Loaded] = {}


def direct_singles(api: str, requests: int) -> list[float]:
    loaded = LOADED[api]
    return [timed(lambda job=job: loaded.run([job]))[0] for job in loaded.jobs[:requests]]


def close_direct() -> None:
    for loaded in LOADED.values():
        loaded.close()


def generation_job(body: dict[str, Any]) -> GenerationJob:
    """What the front passes on for a /generate/json body: the job's own fields, whatever the request adds around
    them (format, ...)."""
    request = GenerateRequest.model_validate_json(json.dumps(body))
    return GenerationJob(**request.model_dump(include=set(GenerationJob.model_fields) - {"seed"}), seed=request.seed)


BATCH = 8  # jobs in each in-process ceiling


def direct_generate(plan: Plan, requests: int) -> dict[str, Any]:
    """In a process of its own: the mix's generate jobs one at a time, then the generate ceilings."""
    audioldm2 = load_audioldm2()
    jobs = [generation_job(plan.mix.generate_body(i)) for i in range(max(requests, BATCH))]
    for job in jobs[:2]:  # warm-up, not recorded
        timed(lambda job=job: audioldm2.generate([job]))
    LOADED["generate"] = Loaded(audioldm2.generate, jobs, audioldm2.close)
    singles = direct_singles("generate", requests)
    five_seconds = [job.model_copy(update={"duration": 5.0}) for job in jobs[:BATCH]]
    repeats = plan.ceiling_repeats
    scaling = (
        {
            "generate mix (8 jobs, 2/5/10 s)": batch_scaling(jobs[:BATCH], audioldm2.generate, repeats),
            "generate, all 5 s (8 jobs)": batch_scaling(five_seconds, audioldm2.generate, repeats),
        }
        if repeats
        else {}
    )
    import torch

    return {"in_process_s": singles, "batch_scaling": scaling, "torch_threads": torch.get_num_threads()}


def direct_critique(plan: Plan, clip: bytes, requests: int) -> dict[str, Any]:
    """In a process of its own: the mix's critique jobs one at a time, what the front does per critique besides
    the model, then the critique ceilings."""
    flamingo = Flamingo()
    decoded = [flamingo.decoded(clip)]

    def job(i: int) -> Any:
        return critique_job(plan.mix.critique_fields(i), decoded if plan.mix.critique_has_audio(i) else [])

    for i in range(2):  # warm-up, not recorded
        timed(lambda i=i: flamingo.run([job(i)]))
    LOADED["critique"] = Loaded(flamingo.run, [job(i) for i in range(requests)])
    singles = direct_singles("critique", requests)

    def front_work(i: int) -> float:
        """What the HTTP path does per critique besides the model: decode the upload, the runner's checks."""
        started = time.perf_counter()
        if plan.mix.critique_has_audio(i):
            flamingo.decoded(clip)
        assert flamingo.refusal(job(i)) is None
        return time.perf_counter() - started

    with no_second_openmp_team():
        front = [front_work(i) for i in range(requests)]
    critiques = [job(i) for i in range(2 * BATCH)]
    repeats = plan.ceiling_repeats
    scaling = (
        {
            "critique mix (8 jobs)": batch_scaling(critiques[:BATCH], flamingo.run, repeats),
            "critique, all 30 s clips (8 jobs)": batch_scaling(critiques[0::2], flamingo.run, repeats),
            "critique, all text-only (8 jobs)": batch_scaling(critiques[1::2], flamingo.run, repeats),
        }
        if repeats
        else {}
    )
    return {"in_process_s": singles, "front_and_checks_s": front, "batch_scaling": scaling}


def by_index(repeats: list[list[float]]) -> list[float]:
    """Each request's median latency over the repeats (each sent the same requests 0, 1, ... in order); the first
    repeat's alone when one lost requests and the indices no longer line up."""
    if len({len(run) for run in repeats}) != 1:
        return repeats[0]
    return [statistics.median(run[i] for run in repeats) for i in range(len(repeats[0]))]


def overhead(rows: list[dict], direct: dict[str, Any], api: str) -> dict[str, Any]:
    """HTTP at concurrency 1 (batching on, the default) against the same jobs in-process, run between its repeats
    (the in-process run before the servers stays in the report as `direct`, for comparison only)."""
    [http] = [r for r in rows if r["api"] == api and r["batching"] and r["concurrency"] == 1]
    http_s, runner_s = http["latencies_s"], http["runner_inference_s"]
    in_process = http["in_process_repeats_s"]
    main_s = [s for run in in_process for s in run]
    http_by_index, main_by_index = by_index(http["latencies_by_repeat_s"]), by_index(in_process)
    n = min(len(http_by_index), len(main_by_index))
    p50 = {name: 1000 * percentiles(values)["p50"] for name, values in (("http", http_s), ("direct", main_s))}
    over_ms = p50["http"] - p50["direct"]
    budget_ms = max(15.0, 0.03 * p50["direct"])
    paired = sorted(1000 * (h - d) for h, d in zip(http_by_index[:n], main_by_index[:n], strict=True))
    return {
        "http_p50_ms": p50["http"],
        "direct_p50_ms": p50["direct"],
        "overhead_ms": over_ms,
        "overhead_pct": 100 * over_ms / p50["direct"],
        "target_ms": budget_ms,
        "target_met": over_ms <= budget_ms,
        "paired_median_overhead_ms": paired[len(paired) // 2],
        # Where the difference goes:
        "runner_inference_p50_ms": 1000 * percentiles(runner_s)["p50"],
        "http_minus_runner_inference_p50_ms": 1000
        * percentiles([h - r for h, r in zip(http_s, runner_s, strict=True)])["p50"],
        "front_and_checks_p50_ms": (
            1000 * percentiles(direct[api]["front_and_checks_s"])["p50"]
            if "front_and_checks_s" in direct[api]
            else None
        ),
    }


# ---- report ------------------------------------------------------------------------------


def load_label(row: dict[str, Any]) -> str:
    return f"c={row['concurrency']}" if row["loop"] == "closed" else f"{row['rate_rps']:g} req/s"


def summarise(rows: list[dict]) -> dict[str, Any]:
    """Throughput with batching on over off, per closed-loop concurrency and per open-loop rate: the median of
    the ratios of repeats run back to back, with their spread."""
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    for api in ("generate", "critique"):
        ratios[api] = {}
        for row in (r for r in rows if r["api"] == api and r["batching"]):
            key = "concurrency" if row["loop"] == "closed" else "rate_rps"
            off = [r for r in rows if r["api"] == api and not r["batching"] and r[key] == row[key]]
            if not off:
                continue
            paired = [
                on / off_rps
                for on, off_rps in zip(row["throughput_repeats_rps"], off[0]["throughput_repeats_rps"], strict=True)
                if on and off_rps
            ]
            if paired:
                ratios[api][load_label(row)] = {
                    "median": statistics.median(paired),
                    "min": min(paired),
                    "max": max(paired),
                }
    return ratios


def cpu_per_request(row: dict[str, Any]) -> dict[str, float]:
    """CPU seconds per answered request by role (clients, front, runner, other) at a level that answered some."""
    return {role: used / row["ok"] for role, used in row["cpu_s"].items()}


def answered_level(rows: list[dict[str, Any]], api: str, batching: bool, load: str) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["api"] == api and r["batching"] == batching and load_label(r) == load and r["ok"]),
        None,
    )


def cores_busy(row: dict[str, Any]) -> float:
    """The cores a level kept busy: its CPU per request x its throughput."""
    return sum(cpu_per_request(row).values()) * row["throughput_rps"]


def cpu_cap(off: dict[str, float], on: dict[str, float], ceiling: float) -> float:
    """The on/off ratio if the runner's CPU per request fell by the ceiling's factor while the rest of the path
    (clients, front, other processes) cost what it did: at a level that keeps every core busy, the most batching
    can show on a machine where all of it shares the model's cores."""
    return sum(off.values()) / (off["runner"] / ceiling + sum(on.values()) - on["runner"])


def ceiling_shares(
    ratios: dict[str, Any], direct: dict[str, Any], plan: Plan, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Batching on/off at the highest concurrency as a share of the in-process ceiling for the same mix, and the
    share this machine's CPU per request leaves reachable (`cpu_cap`)."""
    top = f"c={max(plan.concurrency)}"
    shares = {}
    for api, mix in CEILING_MIX.items():
        if mix not in direct["batch_scaling"]:  # a plan without ceilings (one server)
            continue
        ceiling = direct["batch_scaling"][mix]["speedup"]
        on_off = ratios[api][top]["median"] if top in ratios[api] else None
        off, on = answered_level(rows, api, False, top), answered_level(rows, api, True, top)
        cap = None if off is None or on is None else cpu_cap(cpu_per_request(off), cpu_per_request(on), ceiling)
        shares[api] = {
            "on_off": on_off,
            "ceiling": ceiling,
            "share": None if on_off is None else on_off / ceiling,
            "met": on_off is not None and on_off / ceiling >= CEILING_SHARE_TARGET,
            "cpu_cap": cap,
            "cpu_cap_share": None if cap is None else min(cap, ceiling) / ceiling,
            "cores_busy": None if off is None or on is None else {"on": cores_busy(on), "off": cores_busy(off)},
        }
    return shares


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Serving benchmark ({report['profile']} profile)", "", *header_markdown(report), ""]
    lines += [f"- {api} mix: {text}" for api, text in report["mix"].items()]
    lines += [
        f"- requests per closed level: {report['requests_per_level']}, each level run {report['level_repeats']} "
        "times with the servers (batching on, off: both up together) in turn; throughput: the median run's; "
        "latencies and batches: over all runs; closed loop: each client sends its next request "
        "when the previous one answered; open loop: Poisson arrivals at a fixed rate (req/s), "
        f"{report['open_loop_rates_rps']}, fractions of the closed loop's throughput at the highest concurrency "
        "with batching on; latency = client send to full response",
        "",
        "| api | batching | load | requests | throughput (req/s) | p50 ms | p95 ms | p99 ms "
        "| batches (metrics) | mean batch | max bucket | max batch seen | mean group | others' CPU (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["levels"]:
        b, lat = r["batches"], r["latency_ms"]
        lines.append(
            f"| {r['api']} | {'on' if r['batching'] else 'off'} "
            f"| {load_label(r)} "
            f"| {r['ok']}/{r['requests']} "
            f"| {fmt(r['throughput_rps'])} | {fmt(lat['p50'], 0)} | {fmt(lat['p95'], 0)} | {fmt(lat['p99'], 0)} "
            f"| {b['metrics_batches']:.0f} | {fmt(b['metrics_mean_size'])} | {fmt(b['metrics_max_bucket'], 0)} "
            f"| {b['max_size_seen']} | {fmt(b['mean_group_size'])} "
            f"| {r['foreign_cpu']['cores']:.2f}{' (contended)' if r['foreign_cpu']['contended'] else ''} |"
        )
    failed = [r for r in report["levels"] if r["errors"]]
    if failed:
        lines += ["", "Failed requests (first of each level):", ""]
        lines += [
            f"- {r['api']} batching {'on' if r['batching'] else 'off'} {load_label(r)}: "
            f"{r['requests'] - r['ok']} failed; {r['errors'][0][:160]}"
            for r in failed
        ]
    lines += [
        "",
        "CPU per answered request, ms (user + system over all runs of the level): the clients (this benchmark's "
        "process), the front, the API's runner, the other processes of the server; on 2 cores all of it comes out "
        "of the same cores the model runs on, while the in-process ceiling below counts the runner alone:",
        "",
        "| api | batching | load | clients | front | runner | others | runner's share |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in report["levels"] if r["ok"]):
        per = {role: 1000 * seconds for role, seconds in cpu_per_request(r).items()}
        lines.append(
            f"| {r['api']} | {'on' if r['batching'] else 'off'} | {load_label(r)} | {per['client']:.1f} "
            f"| {per['front']:.1f} | {per['runner']:.1f} | {per['other']:.1f} "
            f"| {100 * per['runner'] / sum(per.values()):.0f}% |"
        )
    lines += ["", "Batching on / off throughput (median of the back-to-back pairs of runs, min-max):", ""]
    for api, by_c in report["throughput_ratio_on_off"].items():
        lines.append(
            f"- {api}: "
            + ", ".join(f"{load}: {v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f})" for load, v in by_c.items())
        )
    lines += [
        "",
        "HTTP path vs the same jobs in-process (concurrency 1, batching on; in-process run again after each HTTP "
        "run of the level, in its own process holding one model on its model thread):",
        "",
        "| api | HTTP p50 ms | direct p50 ms | overhead ms | overhead % | target ms | met | paired median ms "
        "| runner inference p50 ms | HTTP - runner inference p50 ms |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for api, o in report["overhead"].items():
        lines.append(
            f"| {api} | {o['http_p50_ms']:.1f} | {o['direct_p50_ms']:.1f} | {o['overhead_ms']:.1f} "
            f"| {o['overhead_pct']:.1f} | {o['target_ms']:.1f} | {'yes' if o['target_met'] else 'no'} "
            f"| {o['paired_median_overhead_ms']:.1f} "
            f"| {o['runner_inference_p50_ms']:.1f} | {o['http_minus_runner_inference_p50_ms']:.1f} |"
        )
    if report["breakdown"]:
        lines += [
            "",
            "Where one request's time goes (concurrency 1, batching on, a separate server tracing every request; "
            "medians over the requests of each span's summed duration in its trace):",
            "",
            "| api | span (service: name) | p50 ms | in requests |",
            "|---|---|---:|---:|",
        ]
    for api, b in report["breakdown"].items():
        lines.append(f"| {api} | client: whole request | {fmt(b['client_p50_ms'], 1)} | {b['requests']} |")
        lines += [
            f"| {api} | {name} | {ms:.1f} | {b['spans_seen_in'][name]} |" for name, ms in b["spans_p50_ms"].items()
        ]
    if report["direct"]["batch_scaling"]:
        lines += [
            "",
            "The same jobs in-process, one by one vs as one runner batch (each runner's own loop), "
            "the most batching can give on this machine:",
            "",
            "| jobs | groups | repeats | sum of singles s (median) | one batch s (median) "
            "| speedup: median (min-max) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for name, b in report["direct"]["batch_scaling"].items():
        lines.append(
            f"| {name} | {b['groups']} | {b['repeats']} | {b['sum_of_singles_s']:.2f} | {b['one_batch_s']:.2f} "
            f"| {b['speedup']:.2f}x ({b['speedup_min']:.2f}-{b['speedup_max']:.2f}) |"
        )
    foreign = report["direct"]["foreign_cpu"]
    lines.append(f"\nOther processes' CPU during the in-process runs: {foreign['cores']:.2f} cores on average.")
    t = report["targets"]
    lines += [
        "",
        "Targets (reported, not asserted):",
        "",
        *[
            f"- {api}: batching on/off at the highest concurrency >= {100 * CEILING_SHARE_TARGET:.0f}% of the "
            f"in-process ceiling: {v}"
            for api, v in t["batching_vs_ceiling"].items()
        ],
        *[f"- {api}: overhead <= max(15 ms, 3%) at c=1: {v}" for api, v in t["overhead"].items()],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the report (.json and .md)")
    parser.add_argument("--name", default="serving", help="the report's file name")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="concurrency 1 and 8, fewer and lighter requests")
    size.add_argument("--smoke", action="store_true", help="concurrency 1 and 2, the lightest requests (CI)")
    size.add_argument("--gpu", action="store_true", help="concurrency 1 and 8, 25 steps, 32 tokens, few requests")
    parser.add_argument("--one-server", action="store_true", help="batching on only: HTTP against in-process")
    args = parser.parse_args(argv)
    plan = make_plan("smoke" if args.smoke else "quick" if args.quick else "gpu" if args.gpu else "full")
    if args.one_server:
        plan = plan.one_server()
    for name in ("smoke", "quick", "gpu", "full"):  # every size's mix, whichever runs: one that rots fails at once
        validate_plan(make_plan(name))
    requests = {str(c): plan.requests_at(c) for c in plan.concurrency}

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    report: dict[str, Any] = header(None if argv is None else ["bench/serving.py", *argv])
    report |= {
        "profile": PROFILE,
        "size": plan.size,
        "one_server": args.one_server,
        "mix": plan.mix.describe(),
        "requests_per_level": requests,
        "level_repeats": plan.level_repeats,
    }
    clip = audio_file("wav", CRITIQUE_CLIP_SECONDS)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        # In-process first, while no server competes for the CPU cores.
        log("in-process runs of the concurrency-1 jobs")
        with closing(Direct(plan, clip)) as in_process:
            direct = in_process.measure(plan.requests_at(1))
            rows, open_rates = run_servers(plan, clip, workdir, in_process, log)
        report["breakdown"] = breakdown(plan, clip, workdir, log) if plan.traced else {}
    report["open_loop_rates_rps"] = open_rates
    report["levels"] = rows
    report["direct"] = direct
    report["throughput_ratio_on_off"] = summarise(rows)
    report["overhead"] = {api: overhead(rows, direct, api) for api in ("generate", "critique")}
    report["ceiling_share"] = ceiling_shares(report["throughput_ratio_on_off"], direct, plan, rows)
    report["targets"] = {
        "batching_vs_ceiling": {
            api: "n/a"
            if c["share"] is None
            else f"{c['on_off']:.2f}x of {c['ceiling']:.2f}x = {100 * c['share']:.0f}% "
            f"({'met' if c['met'] else 'missed'})"
            + (
                ""
                if c["cpu_cap"] is None
                else f"; the CPU the rest of the path takes per request caps it near {c['cpu_cap']:.2f}x = "
                f"{100 * c['cpu_cap_share']:.0f}% on these cores (cores busy at that level: on "
                f"{c['cores_busy']['on']:.2f}, off {c['cores_busy']['off']:.2f}; the cap holds where both are all)"
            )
            for api, c in report["ceiling_share"].items()
        },
        "overhead": {
            api: f"{o['overhead_ms']:.1f} ms = {o['overhead_pct']:.1f}% vs budget {o['target_ms']:.1f} ms "
            f"({'met' if o['target_met'] else 'missed'})"
            for api, o in report["overhead"].items()
        },
    }
    write_report(args.out, args.name, report, markdown(report))
    log(f"wrote {args.out / (args.name + '.json')} and {args.out / (args.name + '.md')}")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
