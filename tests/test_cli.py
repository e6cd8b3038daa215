"""The `audio-studio` command line, run as a subprocess (as users run it) against a real server, tiny profile."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile

from tests.audio_files import audio_file
from tests.conftest import Secured

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cli"))
from audio_studio_cli.limits import RANGES

ROOT = Path(__file__).resolve().parent.parent
CLI_PATH = ROOT / "cli"
FAST_GENERATE = ("--duration", "1", "--steps", "2")
RATE = 16_000
TIMEOUT = 180
SERVER_MODULES = (
    "schemas",
    "service",
    "settings",
    "presets",
    "audio_io",
    "compat",
    "front",
    "models",
    "runners",
    "bentoml",
)


def cli_env(**extra: str) -> dict[str, str]:
    """Only cli/ on the path (not the checkout), and no server or key picked up from the caller's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIO_STUDIO_") and k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(CLI_PATH), **extra}


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m audio_studio_cli` with stderr piped: its progress lines must be free of control characters."""
    done = subprocess.run(
        [sys.executable, "-m", "audio_studio_cli", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert "\x1b" not in done.stderr and "\r" not in done.stderr, repr(done.stderr)
    return done


def audio_of(path: Path) -> int:
    """Samples in a 16 kHz mono file."""
    samples, rate = soundfile.read(path)
    assert rate == RATE and samples.ndim == 1
    return len(samples)


def seeds_and_scores(stdout: str) -> list[tuple[str, int, float | None]]:
    lines = re.findall(r"^(\S+)  seed=(\d+)(?:  clap=(\S+))?$", stdout, re.M)
    return [(name, int(seed), float(clap) if clap else None) for name, seed, clap in lines]


# ---- generate --------------------------------------------------------------------------------------------------


def test_generate_one_file(server: str, tmp_path: Path) -> None:
    done = cli(
        tmp_path, "generate", "rain on a tin roof", *FAST_GENERATE, "--seed", "7", "-o", "rain.wav", "--url", server
    )
    assert done.returncode == 0, done.stderr
    assert seeds_and_scores(done.stdout) == [("rain.wav", 7, None)]
    assert audio_of(tmp_path / "rain.wav") == RATE
    assert done.stderr.startswith("generating: queued") and re.search(r"generating: done in \d+\.\d s\n", done.stderr)


def test_models_lists_the_families_and_generate_takes_one(server: str, tmp_path: Path) -> None:
    listed = cli(tmp_path, "models", "--url", server)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^audioldm  cvssp/audioldm-s-full-v2  generate  up to 30 s$", listed.stdout, re.M)
    assert re.search(r"^audioldm2  cvssp/audioldm2  .*\(default\)$", listed.stdout, re.M)
    args = ("generate", "rain", *FAST_GENERATE, "--model", "audioldm", "--seed", "3", "-o", "v1.wav", "--url", server)
    done = cli(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert audio_of(tmp_path / "v1.wav") == RATE


def test_generate_two_waveforms_writes_two_files_best_first(server: str, tmp_path: Path) -> None:
    args = ("generate", "rain on a tin roof", *FAST_GENERATE, "-n", "2", "--seed", "7", "-o", "rain.wav")
    done = cli(tmp_path, *args, AUDIO_STUDIO_URL=server)
    assert done.returncode == 0, done.stderr
    written = seeds_and_scores(done.stdout)
    assert [name for name, _, _ in written] == ["rain-0.wav", "rain-1.wav"]
    assert sorted(seed for _, seed, _ in written) == [7, 8]
    scores = [score for _, _, score in written]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rain-0.wav", "rain-1.wav"]
    assert all(audio_of(tmp_path / name) == RATE for name, _, _ in written)


@pytest.mark.parametrize(
    ("args", "expected", "container"),
    [
        # the name from the prompt, the extension from the format: a playable mp3 of the clip's length
        (("--format", "mp3", "--compression", "0.2"), "rain-on-a-tin-roof.mp3", "MP3"),
        (("-o", "take.flac"), "take.flac", "FLAC"),  # the format from the name
    ],
)
def test_generate_names_and_formats(
    server: str, tmp_path: Path, args: tuple[str, ...], expected: str, container: str
) -> None:
    done = cli(tmp_path, "generate", "Rain on a tin roof!", *FAST_GENERATE, *args, AUDIO_STUDIO_URL=server)
    assert done.returncode == 0, done.stderr
    assert [name for name, _, _ in seeds_and_scores(done.stdout)] == [expected]
    assert soundfile.info(tmp_path / expected).format == container and audio_of(tmp_path / expected) == RATE


def test_dash_o_writes_the_audio_to_stdout_and_the_seed_line_to_stderr(server: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "audio_studio_cli", "generate", "rain", *FAST_GENERATE, "--seed", "7", "-o", "-"],
        cwd=tmp_path,
        env=cli_env(AUDIO_STUDIO_URL=server),
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    samples, rate = soundfile.read(io.BytesIO(done.stdout))
    assert (rate, len(samples)) == (RATE, RATE)
    assert done.stderr.decode().splitlines()[-1] == "-  seed=7"
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_a_default_name_never_overwrites_an_earlier_file(server: str, tmp_path: Path) -> None:
    """Only a name given with -o is written over; a name the CLI picks is a new one."""

    def generate(*extra: str) -> list[str]:
        done = cli(tmp_path, "generate", "rain", *FAST_GENERATE, *extra, AUDIO_STUDIO_URL=server)
        assert done.returncode == 0, done.stderr
        return [name for name, _, _ in seeds_and_scores(done.stdout)]

    written = generate("--seed", "1")
    first = (tmp_path / "rain.wav").read_bytes()
    written += generate("--seed", "2") + generate("-n", "2") + generate("-n", "2")
    assert written == ["rain.wav", "rain-2.wav", "rain-0.wav", "rain-1.wav", "rain-2-0.wav", "rain-2-1.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)
    assert (tmp_path / "rain.wav").read_bytes() == first


# ---- transform and critique ------------------------------------------------------------------------------------


def test_on_a_terminal_a_progress_bar_then_one_line(server: str, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "audio_studio_cli", "generate", "rain", "--duration", "2", "--steps", "20"],
        cwd=tmp_path,
        env=cli_env(AUDIO_STUDIO_URL=server, TERM="xterm"),
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    shown = b""
    with open(leader, "rb", buffering=0) as terminal:
        try:
            while chunk := terminal.read(4096):  # read as it comes, so the spinner never blocks on a full pty
                shown += chunk
        except OSError:  # EIO: the process closed its end
            pass
    stdout, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0 and stdout.startswith(b"rain.wav  seed=")
    text = shown.decode()
    assert "\x1b[" in text and re.search(r"generating: denoising \d+/20 steps", text), text
    assert re.search(r"\d+%", text) and "ETA" in text and re.search(r"generating: done in \d+\.\d s", text)


def test_transform_keeps_the_input_length(server: str, tmp_path: Path) -> None:
    (tmp_path / "drums.wav").write_bytes(audio_file("wav", 1.5))
    args = ("transform", "drums.wav", "jazz kit with brushes", "--strength", "0.6", "--steps", "2", "--seed", "3")
    done = cli(tmp_path, *args, "-o", "jazz.wav", AUDIO_STUDIO_URL=server)
    assert done.returncode == 0, done.stderr
    assert seeds_and_scores(done.stdout) == [("jazz.wav", 3, None)]
    assert audio_of(tmp_path / "jazz.wav") == int(1.5 * RATE)
    assert "transforming: done in" in done.stderr


def test_edit_inpaints_a_range_or_extends_the_clip(server: str, tmp_path: Path) -> None:
    (tmp_path / "loop.wav").write_bytes(audio_file("wav", 3.0))
    quick = ("--steps", "2", "--seed", "5")
    inpainted = cli(tmp_path, "edit", "loop.wav", "--inpaint", "1-2", "a clean snare", *quick, "-o", "fixed.wav",
                    AUDIO_STUDIO_URL=server)  # fmt: skip
    assert inpainted.returncode == 0, inpainted.stderr
    assert seeds_and_scores(inpainted.stdout) == [("fixed.wav", 5, None)]
    assert audio_of(tmp_path / "fixed.wav") == 3 * RATE
    assert "editing: done in" in inpainted.stderr and "edited 1-2 s" in inpainted.stderr
    extended = cli(tmp_path, "edit", "loop.wav", "--extend", "2", "--side", "start", "more", *quick, "-o", "long.wav",
                   AUDIO_STUDIO_URL=server)  # fmt: skip
    assert extended.returncode == 0, extended.stderr
    assert audio_of(tmp_path / "long.wav") == 5 * RATE and "edited 0-2 s" in extended.stderr
    bad = cli(tmp_path, "edit", "loop.wav", "--inpaint", "2", "x", AUDIO_STUDIO_URL=server)
    assert bad.returncode == 2 and "must be START-END in seconds" in bad.stderr, bad.stderr
    past = cli(tmp_path, "edit", "loop.wav", "--inpaint", "2-9", "x", AUDIO_STUDIO_URL=server)
    assert past.returncode == 2 and "end_s" in past.stderr and "3.000 s" in past.stderr, past.stderr


def test_critique_prints_the_text_or_the_whole_json(server: str, tmp_path: Path) -> None:
    (tmp_path / "take3.mp3").write_bytes(audio_file("mp3", 2.0))
    (tmp_path / "ref.flac").write_bytes(audio_file("flac", 2.0, hz=330))
    args = ("critique", "take3.mp3", "--reference", "ref.flac", "--preset", "compare", "--max-new-tokens", "4")
    as_json = cli(tmp_path, *args, "--json", AUDIO_STUDIO_URL=server)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert [clip["field"] for clip in body["audio_seconds"]] == ["audio", "reference"]
    assert body["preset"] == "compare" and 1 <= body["tokens_generated"] <= 4
    as_text = cli(tmp_path, *args, AUDIO_STUDIO_URL=server)
    assert as_text.returncode == 0, as_text.stderr
    assert as_text.stdout == body["text"] + "\n"  # greedy decoding: the same answer


def test_structured_critique_in_segments_and_critic_ranking(server: str, tmp_path: Path) -> None:
    (tmp_path / "long.wav").write_bytes(audio_file("wav", 10.0))
    args = ("critique", "long.wav", "--structured", "--long-audio", "segments", "--max-new-tokens", "640")
    done = cli(tmp_path, *args, AUDIO_STUDIO_URL=server)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) >= {"summary", "assessments", "findings", "practice_plan"}
    assert "heard in 3 segments (0-4 s, 3-7 s, 6-10 s)" in done.stderr
    ranked = cli(tmp_path, "generate", "rain", "-n", "2", "--rank-by", "critic", "--duration", "1", "--steps", "2",
                 AUDIO_STUDIO_URL=server)  # fmt: skip
    assert ranked.returncode == 0, ranked.stderr
    scores = [int(line.split("critic=")[1].split("/")[0]) for line in ranked.stdout.splitlines()]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)


def test_critique_text_only(server: str, tmp_path: Path) -> None:
    args = ("critique", "--prompt", "What makes a good vibrato?", "--max-new-tokens", "4", "--json")
    done = cli(tmp_path, *args, AUDIO_STUDIO_URL=server)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["audio_seconds"] == []


# ---- errors and exit codes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("generate", "rain", "--duration", "601"), "error: duration: Input should be less than or equal to 600\n"),
        (("generate", "rain", "-n", "5"), "error: num_waveforms: Input should be less than or equal to 4\n"),
        (("generate", "rain", "--scheduler", "euler"), "error: scheduler: Input should be 'dpmpp' or 'ddim'\n"),
        (("transform", "clip.wav", "jazz", "--strength", "1.5"), "error: strength: Input should be less than or equal"),
        (("critique", "clip.wav", "--preset", "compare"), "error: reference: preset `compare` needs a reference"),
    ],
)
def test_bad_input_exits_2_with_the_servers_message(server: str, tmp_path: Path, args: tuple[str, ...], message: str):
    (tmp_path / "clip.wav").write_bytes(audio_file("wav", 1.0))
    done = cli(tmp_path, *args, AUDIO_STUDIO_URL=server)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["clip.wav"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("transform", "missing.wav", "jazz"), "error: audio missing.wav: no such file\n"),
        (("critique", "--reference", "missing.flac", "--prompt", "x"), "error: reference missing.flac: no such file\n"),
        (("generate", "rain", "-o", "no/such/folder/rain.wav"), "error: -o no/such/folder/rain.wav: the folder"),
        (("generate", "rain", "-o", "rain.wav", "--format", "flac"), "error: -o rain.wav is a .wav name but"),
        (("generate", "rain", "-n", "2", "-o", "-"), "error: -o - writes one file to stdout; with -n 2 name the files"),
        (("generate", "rain", "--url", "localhost:3000"), "error: --url 'localhost:3000' must start with http://"),
        (("generate",), "the following arguments are required: prompt"),
        (("generate", "rain", "--duration", "long"), "argument --duration: invalid float value: 'long'"),
    ],
)
def test_local_usage_errors_exit_2_before_any_request(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = cli(tmp_path, *args, AUDIO_STUDIO_URL=f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "cannot reach" not in done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_exits_3(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cli(tmp_path, "generate", "rain", "--url", url)
    assert done.returncode == 3
    assert done.stderr.splitlines()[-1].startswith(f"error: cannot reach {url}: ")


class Canned(BaseHTTPRequestHandler):
    """A stand-in server with a fixed answer, for the statuses the tiny server cannot be made to give."""

    answer: tuple[int, bytes, dict[str, str], float] = (200, b"", {}, 0.0)
    seen: list[dict[str, str]] = []  # noqa: RUF012 (the requests' headers, for the test to read)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Canned.seen.append(dict(self.headers))
        status, body, headers, delay = Canned.answer
        time.sleep(delay)
        self.send_response(status)
        for name, value in {"content-type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def canned() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def error_body(message: str, kind: str) -> bytes:
    return json.dumps({"error": message, "kind": kind, "detail": []}).encode()


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "line"),
    [
        (503, error_body("audioldm2 is restarting", "unavailable"), {"Retry-After": "5"}, 3,
         "error: audioldm2 is restarting (HTTP 503); retry after 5 s"),
        (429, b"", {"Retry-After": "2"}, 3, "error: HTTP 429 Too Many Requests; retry after 2 s"),
        (413, error_body("body: over the 200 MiB limit", "too_large"), {}, 2, "error: body: over the 200 MiB limit"),
        (500, error_body("the model produced NaN", "non_finite"), {}, 1, "error: the model produced NaN (HTTP 500)"),
        (502, b"<html>bad gateway</html>", {"content-type": "text/html"}, 1, "error: HTTP 502 Bad Gateway"),
    ],
)  # fmt: skip
def test_status_to_exit_code(canned: str, tmp_path: Path, status, body, headers, code: int, line: str) -> None:
    Canned.answer = (status, body, headers, 0.0)
    done = cli(tmp_path, "generate", "rain", "--url", canned)
    assert (done.returncode, done.stderr.splitlines()[-1]) == (code, line)


def test_api_key_is_sent_as_a_bearer_token(canned: str, tmp_path: Path) -> None:
    Canned.answer = (400, error_body("prompt: too short", "invalid_input"), {}, 0.0)
    Canned.seen.clear()
    assert cli(tmp_path, "generate", "a", "--url", canned, AUDIO_STUDIO_API_KEY="from-env").returncode == 2
    assert (
        cli(tmp_path, "--api-key", "flag", "generate", "b", "--url", canned, AUDIO_STUDIO_API_KEY="env").returncode == 2
    )
    assert cli(tmp_path, "generate", "c", "--url", canned).returncode == 2
    auth = [{k.lower(): v for k, v in headers.items()}.get("authorization") for headers in Canned.seen]
    assert auth == ["Bearer from-env", "Bearer flag", None]


def test_a_slow_answer_exits_3_after_the_timeout(canned: str, tmp_path: Path) -> None:
    Canned.answer = (200, b"", {}, 3.0)
    done = cli(tmp_path, "generate", "rain", "--url", canned, "--timeout", "0.5")
    assert done.returncode == 3
    assert done.stderr.splitlines()[-1] == f"error: no answer from {canned} within 0.5 s"


def test_ctrl_c_cancels_the_job_and_says_so(server: str, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "audio_studio_cli", "generate", "rain", "--duration", "30", "--steps", "500"],
        cwd=tmp_path,
        env=cli_env(AUDIO_STUDIO_URL=server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background commands with SIGINT ignored; Ctrl-C reaches a foreground one.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None and process.stderr.readline().startswith("generating: ")
    time.sleep(1.0)  # the job is on the server
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and stdout == ""
    cancelled = re.fullmatch(r"cancelled job ([0-9a-f]+)", stderr.splitlines()[-1])
    assert cancelled, stderr
    state = httpx.get(f"{server}/jobs/{cancelled[1]}", timeout=30).json()["state"]
    assert state == "cancelled"
    assert list(tmp_path.iterdir()) == []


def test_progress_lines_then_no_wait_and_jobs_wait_write_the_same_bytes(server: str, tmp_path: Path) -> None:
    """Without a terminal: a line with the steps at most every 2 s. A job submitted with --no-wait (first, so that
    it runs beside the synchronous one) and fetched with `jobs wait` is the same file; the server options work before
    the command too."""
    # 60 steps: seconds of denoising, room for three lines at one per 2 s
    args = ("generate", "rain", "--duration", "20", "--steps", "60", "--seed", "4")
    submitted = cli(tmp_path, "--url", server, *args, "--no-wait")
    assert submitted.returncode == 0 and re.fullmatch(r"[0-9a-f]+\n", submitted.stdout), submitted.stderr
    job_id = submitted.stdout.strip()
    plain = cli(tmp_path, *args, "-o", "plain.wav", AUDIO_STUDIO_URL=server)
    assert plain.returncode == 0, plain.stderr
    steps = re.findall(r"^generating: denoising (\d+)/60 (\d+)%$", plain.stderr, re.M)
    assert len(steps) >= 3 and [int(done) for done, _ in steps] == sorted(int(done) for done, _ in steps), plain.stderr
    status = cli(tmp_path, "--url", server, "jobs", "status", job_id)
    assert status.stdout.startswith(f"{job_id}  generate  "), status.stderr
    waited = cli(tmp_path, "jobs", "wait", job_id, "-o", "job.wav", "--url", server)
    assert waited.returncode == 0 and waited.stdout == "job.wav  seed=4\n", waited.stderr
    assert (tmp_path / "job.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes()
    fetched = cli(tmp_path, "--url", server, "jobs", "result", job_id, "-o", "again.wav")
    assert (tmp_path / "again.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes(), fetched.stderr
    missing = cli(tmp_path, "--url", server, "jobs", "cancel", "0" * 32)
    assert missing.returncode == 2 and "error: " in missing.stderr


def test_help_limits_are_the_served_contracts(server: str) -> None:
    """Every ranged field of the three requests, as /docs.json publishes it, is what cli/audio_studio_cli/limits.py
    says (and so what the help texts say)."""
    schemas = httpx.get(f"{server}/docs.json", timeout=30).json()["components"]["schemas"]
    served: dict[str, dict[str, tuple[float, float, Any]]] = {}
    for request in RANGES:
        for name, field in schemas[request]["properties"].items():
            ranged = next((s for s in [field, *field.get("anyOf", [])] if "maximum" in s), None)
            if ranged is not None:
                served.setdefault(request, {})[name] = (ranged["minimum"], ranged["maximum"], field.get("default"))
    assert served == RANGES


# ---- what the CLI is made of -----------------------------------------------------------------------------------

NO_SERVER_SIDE = f"""
import sys
from audio_studio_cli import commands, exits, progress
from audio_studio_cli.main import main

assert main(["generate", "rain", "--duration", "1", "--steps", "2", "-o", "x.wav", "--url", sys.argv[1]]) == 0
try:
    main(["--help"])
except SystemExit:
    pass
loaded = [name for name in {(*SERVER_MODULES, "torch")!r} if name in sys.modules]
assert not loaded, loaded
"""


def test_the_cli_never_loads_torch_or_the_server(server: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_SERVER_SIDE, server], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "exit codes:" in done.stdout and audio_of(tmp_path / "x.wav") == RATE


def test_help_lists_the_exit_codes(tmp_path: Path) -> None:
    for command in ((), ("generate",), ("transform",), ("critique",)):
        done = cli(tmp_path, *command, "--help")
        assert done.returncode == 0
        table = done.stdout.split("exit codes:")[1]
        assert all(re.search(rf"^  {code} ", table, re.M) for code in (0, 1, 2, 3, 130)), done.stdout


def test_pip_install_gives_the_console_script_and_only_the_cli(tmp_path: Path) -> None:
    """`pip install .` of a copy of the checkout's packaging files, offline: httpx and rich come from this venv."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    subprocess.run(["cp", "-r", str(CLI_PATH), str(source / "cli")], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    where = [venv / "bin" / "python", "-c", "import site; print(site.getsitepackages()[0])"]
    site = Path(subprocess.check_output(where, text=True).strip())
    (site / "dev-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # pip, setuptools, httpx, rich
    install = [venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*install, "--quiet", str(source)], check=True, cwd=tmp_path, timeout=120)
    installed = {p.name for p in site.iterdir()} - {"dev-venv.pth", "__pycache__"}
    assert installed == {"audio_studio", "audio_studio_cli", "audio_studio-0.1.0.dist-info"}, installed
    done = subprocess.run([venv / "bin" / "audio-studio", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "exit codes:" in done.stdout, done.stderr


def test_against_a_secured_server_the_key_comes_from_the_environment(secured: Secured, tmp_path: Path) -> None:
    refused = cli(tmp_path, "generate", "a bell", *FAST_GENERATE, "--url", secured.url)
    assert refused.returncode == 2 and "no API key" in refused.stderr, refused.stderr
    done = cli(
        tmp_path, "generate", "a bell", *FAST_GENERATE, "--url", secured.url, AUDIO_STUDIO_API_KEY=secured.keys["alpha"]
    )
    assert done.returncode == 0, done.stderr
    assert secured.keys["alpha"] not in done.stdout + done.stderr
