"""A real `bentoml serve service:AudioStudio` for the benchmarks: the benchmarks' profile (bench/tiny_profile.py:
tiny, or random-weight folders when chosen), its own BENTOML_HOME, a free port (retried when another process takes
it first), and the whole process tree stopped on exit."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.tiny_profile import PROFILE

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 180
SERVER_STOP_TIMEOUT_S = 60  # SIGTERM, then SIGKILL for the whole tree


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_s: float | None = None
    stop_forced: bool = False
    workers: list[psutil.Process] = field(default_factory=list)  # psutil refuses to signal a reused pid


RUNNING: list[Server] = []  # what a signal to this process stops first (exit_on_signal)


@contextmanager
def serve(
    workdir: Path, extra_env: dict[str, str] | None = None, glibc_default: bool = False, checkout: Path = ROOT
) -> Iterator[Server]:
    """`bentoml serve service:AudioStudio` from `checkout` (this one unless told), the benchmarks' profile, its own
    BENTOML_HOME; the whole tree stopped on exit, also when this process is told to stop (SIGTERM, e.g. from
    bench/gpu.sh's time limits).

    glibc's allocator is tuned as the Bento's image tunes it (bentofile.yaml), unless `glibc_default`.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, exit_on_signal)
    env = {
        **os.environ,
        "AUDIO_STUDIO_PROFILE": PROFILE,
        "BENTOML_HOME": str(workdir / "bentoml-home"),
        "HF_HUB_OFFLINE": "1",
        **({} if glibc_default else {"MALLOC_MMAP_THRESHOLD_": "65536"}),
        **(extra_env or {}),
    }
    if glibc_default:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    log_path = workdir / "serve.log"
    for _attempt in range(3):  # another process may take the free port first: BentoML's workers bind ports too
        port = free_port()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bentoml",
                    "serve",
                    "service:AudioStudio",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=checkout,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        try:
            if wait_ready(server):
                break
        except BaseException:
            stop(server)
            raise
    else:
        raise RuntimeError(f"bentoml serve could not bind a port:\n{log_path.read_text()[-4000:]}")
    RUNNING.append(server)
    try:
        note_workers(server)
        yield server
    finally:
        stop(server)
        RUNNING.remove(server)


def exit_on_signal(signum: int, frame: object) -> None:
    """Stop the servers now (each runs in a session of its own and would outlive this process), then exit: the
    unwinding may wait on client threads, and a time limit's SIGKILL can come first."""
    for server in list(RUNNING):
        stop(server)
    raise SystemExit(128 + signum)


def note_workers(server: Server) -> None:
    """Remember the arbiter's workers, to stop them even if the arbiter itself dies first."""
    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.Error:
        return
    known = {w.pid for w in server.workers}
    server.workers += [c for c in children if c.pid not in known]


def wait_ready(server: Server) -> bool:
    """True once /readyz answers 200; False when the port was taken (try another)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        note_workers(server)
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-4000:]
            if "Could not bind" in tail or "Address already in use" in tail:
                return False
            raise RuntimeError(f"bentoml serve exited with {server.process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready in {SERVER_START_TIMEOUT_S} s:\n{server.log_path.read_text()[-4000:]}")
        time.sleep(0.5)


def stop(server: Server) -> None:
    """SIGTERM to the arbiter's group; after SERVER_STOP_TIMEOUT_S, SIGKILL to it and to every worker
    (circus puts each worker in a process group of its own, so killing the arbiter's group misses them)."""
    started = time.monotonic()
    note_workers(server)
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.stop_forced = True
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    for worker in server.workers:
        try:
            worker.wait(timeout=0 if server.stop_forced else 10)
        except psutil.TimeoutExpired:
            server.stop_forced = True
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
    server.stop_s = round(time.monotonic() - started, 2)
