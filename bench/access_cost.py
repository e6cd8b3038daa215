"""Access cost: what API-key auth and OpenTelemetry tracing add to each request, on the tiny profile.

Starts a real `bentoml serve service:AudioStudio` (bench/served.py) once per configuration, in turn, on the same
machine, in this order (so drift over the run shows as the difference between the two plain runs):

1. `plain`: no keys, no tracing (the defaults);
2. `keys`: AUDIO_STUDIO_API_KEYS_FILE with 10 `sha256:<digest> name` entries, quotas far above the load
   (rate 1,000,000/min, burst 100,000, 10,000 in flight), so no request is refused;
3. `keys+tracing`: as `keys`, plus AUDIO_STUDIO_OTLP_ENDPOINT at a real OTLP/HTTP receiver running in this
   process (tests/otlp_receiver.py), sample rate 1 (the default), OTEL_BSP_SCHEDULE_DELAY=200;
4. `plain (again)`.

Per configuration, after a warm-up of every kind, it sends requests one at a time over one persistent
httpx.Client and times each one on the client (send to full body read):

- `front-only`: POST /generate with `{}`: 400 from validation, after auth and admission; no runner is called;
- `generate`: POST /generate, a 1 s clip in 2 steps, seed 1: 200 (front, runner hop, model);
- `critique`: POST /critique, multipart, a 1 s WAV with preset `describe`, 8 new tokens, seed 1: 200.

Every request carries `Authorization: Bearer <key>` in every configuration (without keys the front ignores it),
so the bytes sent are the same everywhere. Reported per configuration and kind: median, p90, mean, and the
median's difference to each plain run (ms, %, and a bootstrap 95% interval), plus the spans the receiver got.
For the kinds that reach a runner, the runner's own model time per request (its phase histogram on /metrics) is
taken apart from the rest, since the model time of a fresh tiny-profile server varies by tens of percent. The
key check itself is also timed in-process (`KeyRing.name_of`).

On a shared machine it waits for quiet before each server and each kind (no pytest running, others under 0.15
cores) and measures a kind again when others used more than 0.2 cores meanwhile.

    .venv/bin/python bench/access_cost.py            # 300 / 60 / 60 requests per configuration, ~6-10 min on 2 cores
    .venv/bin/python bench/access_cost.py --quick    # a few requests per kind: a smoke test of the same code
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
import bench.tiny_profile  # noqa: F401  # the tiny profile, before any project import

# isort: split

import httpx
import numpy as np
import psutil
import soundfile

from bench.common import DEFAULT_OUT, fmt, header, header_markdown, write_report
from bench.edge_load import log_stats, source_state
from bench.served import serve
from bench.serving import CpuShare
from tests.otlp_receiver import OTLPReceiver

REQUEST_TIMEOUT_S = 300
# BentoML's dispatcher spends its first 11 calls per runner fitting its latency model and holds a lone request
# back in the last of them (see bench/serving.py): the warm-up sends more than that of every kind.
DEFAULT_WARMUP = 14
DEFAULT_COUNTS = {"front-only": 300, "generate": 60, "critique": 60}
QUICK_WARMUP = 3
QUICK_COUNTS = {"front-only": 20, "generate": 5, "critique": 5}
KEY_COUNT = 10
UNLIMITED_QUOTAS = {
    "AUDIO_STUDIO_KEY_RATE_PER_MINUTE": "1000000",
    "AUDIO_STUDIO_KEY_BURST": "100000",
    "AUDIO_STUDIO_KEY_MAX_IN_FLIGHT": "10000",
}
CONFIGS = ("plain", "keys", "keys+tracing", "plain (again)")
BASELINES = ("plain", "plain (again)")
MODEL_PHASE_SUM = re.compile(r"audio_studio_model_phase_seconds_sum\{([^}]*)\} (\S+)")
# A shared 2-core machine: before each server and each measured kind, wait (up to --quiet-wait-s) until no pytest
# runs and other processes use under QUIET_CORES; a kind measured while others used more than 0.2 cores on average
# (bench/serving.py's "contended") is measured again, up to --retries times.
QUIET_CORES = 0.15
QUIET_WINDOW_S = 3.0
DEFAULT_QUIET_WAIT_S = 300.0
DEFAULT_RETRIES = 2
SPAN_SETTLE_S = 1.0  # the receiver's span count unchanged this long: the exporter has sent what it had
SPAN_WAIT_MAX_S = 15.0
BOOTSTRAP_ROUNDS = 2000


# ---- the requests ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    expect: int
    send: Callable[[httpx.Client], httpx.Response]
    runner: str | None  # the runner it reaches (None: answered by the front)


def one_second_wav() -> bytes:
    """1 s of a 440 Hz tone, 44.1 kHz stereo, 16-bit WAV (what a client would upload)."""
    rate = 44_100
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([tone, tone], axis=1), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def kinds() -> list[Kind]:
    clip = one_second_wav()
    generate_body = {"prompt": "a bell", "duration": 1, "steps": 2, "seed": 1}
    critique_form = {"preset": "describe", "max_new_tokens": "8", "seed": "1"}
    return [
        Kind("front-only", 400, lambda c: c.post("/generate", json={}), None),
        Kind("generate", 200, lambda c: c.post("/generate", json=generate_body), "audioldm2"),
        Kind(
            "critique",
            200,
            lambda c: c.post("/critique", data=critique_form, files={"audio": ("clip.wav", clip, "audio/wav")}),
            "music_flamingo",
        ),
    ]


def timed(client: httpx.Client, kind: Kind) -> float:
    """One request, in ms from send to the full body; its status must be the expected one."""
    started = time.perf_counter()
    response = kind.send(client)
    response.read()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != kind.expect:
        raise AssertionError(f"{kind.name}: expected {kind.expect}, got {response.status_code}: {response.text[:500]}")
    return elapsed_ms


def model_seconds(client: httpx.Client) -> dict[str, float]:
    """Per runner, the seconds its model phases took so far (sum of `audio_studio_model_phase_seconds`)."""
    text = client.get("/metrics").raise_for_status().text
    total: dict[str, float] = {}
    for labels, value in MODEL_PHASE_SUM.findall(text):
        runner = re.search(r'runner="([^"]+)"', labels)
        if runner:
            total[runner[1]] = total.get(runner[1], 0.0) + float(value)
    return total


def counted(span_name: str) -> bool:
    return "/metrics" not in span_name  # the benchmark's own reads of /metrics


# ---- the configurations ---------------------------------------------------------------------------------------


def key_lookup_us(keys_file: Path, key: str, calls: int = 100_000) -> dict[str, float]:
    """In-process, µs per `KeyRing.name_of` (what AccessGuard does per request) on the benchmark's keys file."""
    from front.access import KeyRing

    ring = KeyRing(keys_file)
    assert ring.name_of(key) is not None and ring.name_of("not-a-key") is None
    return {
        "valid_key_us": 1e6 * timeit.timeit(lambda: ring.name_of(key), number=calls) / calls,
        "unknown_key_us": 1e6 * timeit.timeit(lambda: ring.name_of("not-a-key"), number=calls) / calls,
        "calls": calls,
    }


def write_keys_file(folder: Path) -> tuple[Path, str]:
    """A keys file with KEY_COUNT entries; returns it and the key the benchmark presents (the last entry's)."""
    keys = {f"bench-{i}": f"bench-{i}-{secrets.token_urlsafe(24)}" for i in range(KEY_COUNT)}
    path = folder / "api-keys"
    lines = ["# audio-studio access-cost benchmark keys: sha256 digests, never the keys"]
    lines += [f"sha256:{hashlib.sha256(key.encode()).hexdigest()} {name}" for name, key in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path, keys[f"bench-{KEY_COUNT - 1}"]


def config_env(name: str, keys_file: Path, receiver: OTLPReceiver) -> dict[str, str]:
    if name.startswith("plain"):
        return {}
    env = {"AUDIO_STUDIO_API_KEYS_FILE": str(keys_file), **UNLIMITED_QUOTAS}
    if name == "keys+tracing":
        env |= {"AUDIO_STUDIO_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    return env


def settled_span_count(receiver: OTLPReceiver) -> int:
    return receiver.settled_count(SPAN_SETTLE_S, SPAN_WAIT_MAX_S)


def summary(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "median_ms": float(np.median(array)),
        "p90_ms": float(np.percentile(array, 90)),
        "p99_ms": float(np.percentile(array, 99)),
        "mean_ms": float(array.mean()),
        "min_ms": float(array.min()),
        "max_ms": float(array.max()),
    }


@dataclass(frozen=True)
class Plan:
    warmup: int
    counts: dict[str, int]
    retries: int  # times a kind is measured again when others used the CPU meanwhile
    quiet_wait_s: float  # the longest wait for a quiet machine before each server and each measurement


def pytest_running() -> bool:
    """Whether a pytest runs beside this benchmark. Its own ancestors do not count: the shell that ran the suite and
    then `bench/smoke.py` (the README's test command, CI) holds "pytest" in its command line while it waits."""
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.children(recursive=True)), *(p.pid for p in me.parents())}
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.info["pid"] not in mine and any("pytest" in part for part in process.info["cmdline"] or ()):
            return True
    return False


def wait_quiet(max_s: float, log: Callable[[str], None]) -> float:
    """Wait until no pytest runs and other processes use under QUIET_CORES (over QUIET_WINDOW_S); at most max_s.
    Returns the seconds waited."""
    started = time.monotonic()
    said = False
    while True:
        share = CpuShare()
        time.sleep(QUIET_WINDOW_S)
        cores = share.foreign()["cores"]
        busy = pytest_running()
        waited = time.monotonic() - started
        if (cores < QUIET_CORES and not busy) or waited >= max_s:
            if said:
                log(f"  {'quiet' if waited < max_s else 'still busy, going on'} after {waited:.0f} s")
            return round(waited, 1)
        if not said:
            log(f"  machine busy (others {cores:.2f} cores{', pytest running' if busy else ''}): waiting")
            said = True


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def measure_kind(
    name: str, kind: Kind, client: httpx.Client, receiver: OTLPReceiver, plan: Plan, log: Callable[[str], None]
) -> dict[str, Any]:
    """One kind's measured requests, measured again (up to plan.retries) while others used the CPU meanwhile."""
    for attempt in range(1 + plan.retries):
        waited = wait_quiet(plan.quiet_wait_s, log)
        first_span = len(receiver.spans)  # settled: nothing of the requests before is still on its way
        model_before = model_seconds(client)
        share = CpuShare()
        samples = [timed(client, kind) for _ in range(plan.counts[kind.name])]
        foreign = share.foreign()
        model_after = model_seconds(client)
        if not foreign["contended"] or attempt == plan.retries:
            break
        log(f"{name} {kind.name}: others used {foreign['cores']:.2f} cores meanwhile; measuring again")
        settled_span_count(receiver)
    names = Counter(
        f"{x.service}: {x.name}" for x in receiver.spans[first_span : settled_span_count(receiver)] if counted(x.name)
    )
    stats = {
        **summary(samples),
        "others_cpu": foreign,
        "attempts": attempt + 1,
        "quiet_wait_s": waited,
        "spans": sum(names.values()),
        "span_names": dict(sorted(names.items())),
        "samples_ms": [round(s, 3) for s in samples],
    }
    if kind.runner is not None:  # the mean model time per request, from the runner's histogram
        model_s = model_after.get(kind.runner, 0.0) - model_before.get(kind.runner, 0.0)
        stats["model_mean_ms"] = 1000 * model_s / len(samples)
        stats["rest_mean_ms"] = stats["mean_ms"] - stats["model_mean_ms"]
    model = f", model {stats['model_mean_ms']:.1f} ms" if "model_mean_ms" in stats else ""
    log(
        f"{name} {kind.name}: n={stats['n']} median {stats['median_ms']:.1f} ms, p90 {stats['p90_ms']:.1f}, "
        f"mean {stats['mean_ms']:.1f}{model}; others' CPU {foreign['cores']:.2f} cores; spans {stats['spans']}"
    )
    return stats


def keep_log(workdir: Path, name: str, result: dict[str, Any], log: Callable[[str], None]) -> None:
    """Copy the server's log out of its temp dir (also when a request failed: the server's side of the story)."""
    source = workdir / "serve.log"
    if source.exists():
        kept = Path(tempfile.gettempdir()) / f"access-cost-{slug(name)}-{time.strftime('%Y%m%dT%H%M%S')}.log"
        shutil.copyfile(source, kept)
        result["server_log"] = str(kept)
        result["log"] = {k: v for k, v in log_stats(source).items() if k != "runner_calls"}
        log(f"{name}: server log kept at {kept}")


def run_config(
    name: str, env: dict[str, str], key: str, receiver: OTLPReceiver, plan: Plan, log: Callable[[str], None]
) -> dict[str, Any]:
    """One fresh server with `env`: warm-up, then each kind measured in turn."""
    result: dict[str, Any] = {"env": {k: ("<receiver>" if "OTLP" in k else v) for k, v in env.items()}}
    with tempfile.TemporaryDirectory(prefix="bench-access-cost-") as tmp:
        result["quiet_wait_s"] = wait_quiet(plan.quiet_wait_s, log)
        log(f"{name}: starting bentoml serve (tiny profile)")
        started = time.monotonic()
        first_span = len(receiver.spans)
        try:
            with serve(Path(tmp), env) as server:
                result["start_s"] = round(time.monotonic() - started, 2)
                log(f"{name}: ready at {server.url} in {result['start_s']:.1f} s")
                headers = {"Authorization": f"Bearer {key}"}
                with httpx.Client(base_url=server.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
                    for kind in kinds():
                        for _ in range(plan.warmup):
                            timed(client, kind)
                    warmup_spans = settled_span_count(receiver) - first_span
                    result["kinds"] = {
                        kind.name: measure_kind(name, kind, client, receiver, plan, log) for kind in kinds()
                    }
        finally:
            keep_log(Path(tmp), name, result, log)
        result["stop_s"] = server.stop_s
        result["stop_forced"] = server.stop_forced
    result["spans"] = {
        "warmup": warmup_spans,
        "measured": sum(k["spans"] for k in result["kinds"].values()),
        "total_including_shutdown": settled_span_count(receiver) - first_span,
    }
    return result


# ---- comparison -------------------------------------------------------------------------------------------


def median_difference(samples: list[float], baseline: list[float], rng: np.random.Generator) -> dict[str, float]:
    """Difference of medians (ms, % of the baseline's), with a bootstrap 95% interval of the ms difference."""
    a, b = np.asarray(samples), np.asarray(baseline)
    delta = float(np.median(a) - np.median(b))
    boots = np.median(rng.choice(a, (BOOTSTRAP_ROUNDS, a.size)), axis=1) - np.median(
        rng.choice(b, (BOOTSTRAP_ROUNDS, b.size)), axis=1
    )
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"ms": delta, "pct": 100 * delta / float(np.median(b)), "ci95_ms": [float(low), float(high)]}


def compare(configs: dict[str, dict[str, Any]]) -> None:
    rng = np.random.default_rng(0)
    for result in configs.values():
        for kind_name, stats in result["kinds"].items():
            stats["vs"] = {
                base: median_difference(stats["samples_ms"], configs[base]["kinds"][kind_name]["samples_ms"], rng)
                for base in BASELINES
                if base in configs
            }
            if "rest_mean_ms" in stats:
                stats["rest_vs"] = {
                    base: stats["rest_mean_ms"] - configs[base]["kinds"][kind_name]["rest_mean_ms"]
                    for base in BASELINES
                    if base in configs
                }


# ---- the report ---------------------------------------------------------------------------------------


def signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def delta_cell(vs: dict[str, Any] | None) -> str:
    if vs is None:
        return "-"
    low, high = vs["ci95_ms"]
    return f"{signed(vs['ms'])} ms ({signed(vs['pct'], 1)}%) [{signed(low)}, {signed(high)}]"


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = ["# Access cost: API keys and tracing per request (tiny profile)", "", *header_markdown(report)]
    s = report["source"]
    lines += [
        f"- nproc: {report['nproc']}; CPU: {report['machine']['cpu']}",
        f"- source: commit {s['commit'][:12]}" + (f", uncommitted: {', '.join(s['dirty'])}" if s["dirty"] else ""),
        f"- per configuration: warm-up {cfg['warmup']} requests of each kind, then "
        + ", ".join(f"{n} {k}" for k, n in cfg["counts"].items())
        + " requests, one at a time over one persistent httpx.Client; client-side wall time per request",
        f"- configurations, in this order, one fresh server each: {', '.join(report['configs'])}",
        f"- before each server and each kind: a wait (at most {cfg['quiet_wait_s']:g} s) until no pytest runs and "
        f"other processes use under {cfg['quiet_cores']:g} cores; a kind measured while others used more than 0.2 "
        f"cores is measured again (at most {cfg['retries']} times); the last attempt is reported",
        f"- wall time {report['wall_s']:.0f} s",
        "",
        "Δ = difference of medians to the plain run named, ms (% of its median) [bootstrap 95% interval, ms].",
        "",
        "| config | kind | n | median ms | p90 ms | mean ms | p99 ms | max ms | Δ vs plain | Δ vs plain (again) "
        "| others' CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for kind_name in cfg["counts"]:
        for config_name, result in report["configs"].items():
            k = result["kinds"][kind_name]
            vs = k.get("vs", {})
            deltas = " | ".join("-" if config_name == base else delta_cell(vs.get(base)) for base in BASELINES)
            busy = " (busy)" if k["others_cpu"]["contended"] else ""
            busy += f", attempt {k['attempts']}" if k["attempts"] > 1 else ""
            lines.append(
                f"| {config_name} | {kind_name} | {k['n']} | {k['median_ms']:.2f} | {k['p90_ms']:.2f} "
                f"| {k['mean_ms']:.2f} | {k['p99_ms']:.2f} | {k['max_ms']:.1f} | {deltas} "
                f"| {k['others_cpu']['cores']:.2f}{busy} |"
            )
    runner_rows = [
        (config_name, kind_name, k)
        for kind_name in cfg["counts"]
        for config_name, result in report["configs"].items()
        if "model_mean_ms" in (k := result["kinds"][kind_name])
    ]
    if runner_rows:
        lines += [
            "",
            "Model time apart: the runner's own model time per request (mean, from the "
            "`audio_studio_model_phase_seconds` histogram on /metrics, read before and after each kind) and the "
            "rest of the client's mean time (front, auth, tracing, transport, batcher):",
            "",
            "| config | kind | mean ms | model ms | rest ms | Δ rest vs plain | Δ rest vs plain (again) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for config_name, kind_name, k in runner_rows:
            deltas = " | ".join(
                f"{signed(k['rest_vs'][base])} ms" if config_name != base and base in k["rest_vs"] else "-"
                for base in BASELINES
            )
            lines.append(
                f"| {config_name} | {kind_name} | {k['mean_ms']:.2f} | {k['model_mean_ms']:.2f} "
                f"| {k['rest_mean_ms']:.2f} | {deltas} |"
            )
    lookup = report["in_process"]["key_lookup"]
    lines += [
        "",
        f"In-process, the key check itself (`KeyRing.name_of`, {cfg['keys_in_file']} entries, {lookup['calls']:,} "
        f"calls): {lookup['valid_key_us']:.2f} µs per valid key, {lookup['unknown_key_us']:.2f} µs per unknown key.",
    ]
    lines += ["", "## Tracing", ""]
    traced = report["configs"].get("keys+tracing")
    if traced:
        sp = traced["spans"]
        per = ", ".join(
            f"{name} {k['spans']} spans / {k['n']} requests = {k['spans'] / k['n']:.2f} per request"
            for name, k in traced["kinds"].items()
        )
        lines += [
            f"- spans received by the OTLP receiver from `keys+tracing`: {sp['measured']} during the measured "
            f"requests ({per}); {sp['warmup']} during the warm-up; {sp['total_including_shutdown']} in all, "
            "shutdown and the benchmark's reads of /metrics included",
            *(
                f"- {name}, by service and span name: "
                + ", ".join(f"`{span}` {n}" for span, n in k["span_names"].items())
                for name, k in traced["kinds"].items()
            ),
            "- every span of the run, by service and span name: "
            + ", ".join(f"`{span}` {n}" for span, n in traced["spans_by_name"].items()),
            "- spans from the other configurations (must be 0): "
            + ", ".join(
                f"{n} {r['spans']['total_including_shutdown']}"
                for n, r in report["configs"].items()
                if n != "keys+tracing"
            ),
        ]
    lines += ["", "## Servers", "", "| config | start s | stop s | forced stop | log: tracebacks / ERROR / WARNING |"]
    lines.append("|---|---:|---:|---|---|")
    for name, r in report["configs"].items():
        lg = r["log"]
        lines.append(
            f"| {name} | {r['start_s']:.1f} | {fmt(r['stop_s'], 1)} | {'yes' if r['stop_forced'] else 'no'} "
            f"| {lg['tracebacks']} / {lg['error_lines']} / {lg['warning_lines']} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few requests per kind (smoke test)")
    parser.add_argument("--warmup", type=int, default=None, help=f"requests of each kind first ({DEFAULT_WARMUP})")
    for kind_name, n in DEFAULT_COUNTS.items():
        parser.add_argument(f"--{kind_name}", type=int, default=None, help=f"measured {kind_name} requests ({n})")
    parser.add_argument(
        "--retries", type=int, default=DEFAULT_RETRIES, help="measure a kind again when others used the CPU"
    )
    parser.add_argument(
        "--quiet-wait-s", type=float, default=DEFAULT_QUIET_WAIT_S, help="longest wait for a quiet machine"
    )
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)} (default: all)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for access-cost.json and .md")
    args = parser.parse_args(argv)
    configs = args.configs.split(",")
    if unknown := set(configs) - set(CONFIGS):
        parser.error(f"unknown configs: {', '.join(sorted(unknown))}")
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the server of the moment is stopped with its tree.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if args.quick else DEFAULT_WARMUP)
    defaults = QUICK_COUNTS if args.quick else DEFAULT_COUNTS
    counts = {k: getattr(args, k.replace("-", "_")) or n for k, n in defaults.items()}

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    report: dict[str, Any] = header(None if argv is None else ["bench/access_cost.py", *argv])
    report["nproc"] = os.cpu_count()
    report["source"] = source_state()
    plan = Plan(warmup, counts, args.retries, args.quiet_wait_s)
    report["config"] = {
        "warmup": warmup,
        "counts": counts,
        "retries": args.retries,
        "quiet_wait_s": args.quiet_wait_s,
        "quiet_cores": QUIET_CORES,
        "keys_in_file": KEY_COUNT,
        "quotas": UNLIMITED_QUOTAS,
    }
    report["configs"] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-access-keys-") as keys_dir, OTLPReceiver() as receiver:
        keys_file, key = write_keys_file(Path(keys_dir))
        report["in_process"] = {"key_lookup": key_lookup_us(keys_file, key)}
        for name in configs:
            first_span = len(receiver.spans)
            result = run_config(name, config_env(name, keys_file, receiver), key, receiver, plan, log)
            result["spans_by_name"] = dict(
                sorted(Counter(f"{s.service}: {s.name}" for s in receiver.spans[first_span:]).items())
            )
            report["configs"][name] = result
    report["wall_s"] = round(time.monotonic() - started, 1)
    compare(report["configs"])
    write_report(args.out, "access-cost", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
