"""Shared fixtures: the tiny profile, an in-process engine and its step scheduler, and a real `bentoml serve`."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Before any project import: settings are read once, at import.
os.environ["AUDIO_STUDIO_PROFILE"] = "tiny"
os.environ.setdefault("AUDIO_STUDIO_TINY_MODEL_DIR", str(ROOT / ".cache" / "tiny-models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from settings import SETTINGS  # noqa: E402
from tests.otlp_receiver import OTLPReceiver  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

if TYPE_CHECKING:  # torch, diffusers and transformers load only in the tests that use a model
    from models.audioldm2 import AudioLDM2Engine
    from models.profiles import Checkpoint
    from runners.audioldm2_in_process import InProcessScheduler

SERVER_START_TIMEOUT_S = 180


# The container stage runs apart (deploy/container/test.sh): it builds images and takes minutes.
collect_ignore = [] if os.environ.get("AUDIO_STUDIO_CONTAINER_TESTS") else ["container"]


@pytest.fixture(scope="session")
def tiny_audioldm2() -> Checkpoint:
    from models.profiles import audioldm2_checkpoint

    return audioldm2_checkpoint(SETTINGS, None)


@pytest.fixture(scope="session")
def engine(tiny_audioldm2: Checkpoint) -> AudioLDM2Engine:
    import torch

    from models.audioldm2 import AudioLDM2Engine, load_pipeline
    from models.memory import MemoryOptions, place

    placement = place("AudioLDM2", MemoryOptions(), torch.float16)
    return AudioLDM2Engine(load_pipeline(str(tiny_audioldm2.path), placement.device, placement.dtype))


@pytest.fixture(scope="session")
def scheduled(engine: AudioLDM2Engine) -> Iterator[InProcessScheduler]:
    """`engine` driven as the runner serves it: jobs through its step scheduler, on a model thread."""
    from runners.audioldm2_in_process import InProcessScheduler

    with InProcessScheduler(engine) as scheduler:
        yield scheduler


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_side_by_side(*servers: Served) -> None:
    """Start servers at once, so that their imports overlap, and wait until all are ready. Their ports are picked
    together and distinct (a port is free until its server binds it, so one picked per start could repeat)."""
    ports: set[int] = set()
    while len(ports) < len(servers):
        ports.add(_free_port())
    for server, port in zip(servers, sorted(ports), strict=True):
        server.port = port
        server.start()
    for server in servers:
        server.wait_ready()


class Served:
    """One `bentoml serve` process (and its workers) on 127.0.0.1, started and stopped by tests."""

    def __init__(self, target: str, env: dict[str, str], log_path: Path) -> None:
        # Each server keeps its jobs beside its log (kept across restarts), unless the test names a folder.
        env = {"AUDIO_STUDIO_JOB_DATA_DIR": str(log_path.parent / f"{log_path.stem}-jobs"), **env}
        self.target, self.env, self.log_path = target, env, log_path
        self.port: int | None = None  # chosen at the first start, kept for restarts
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "start() first"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        if self.port is None:
            self.port = _free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bentoml",
                    "serve",
                    self.target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, path: str = "/readyz") -> Served:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        attempts = 0
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                if "Could not bind" in self.log_tail() and attempts < 3:
                    # Another process (BentoML's own workers bind ports too) took the free port first.
                    attempts += 1
                    self.port = None
                    self.start()
                    continue
                raise RuntimeError(f"{self.target} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.target} not ready in {SERVER_START_TIMEOUT_S}s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # Workers run in sessions of their own, and one respawned after a kill may outlive the group: end them too.
        workers = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()

    def kill(self) -> None:
        """SIGKILL the server and every worker at once: a crash, with no shutdown of any kind."""
        assert self.process is not None
        workers = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGKILL)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        self.process.wait()
        psutil.wait_procs(workers, timeout=10)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 (tests/redis_server.py), one per test module that asks for it."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def serve_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # The allocator setting of the Bento's image (bentofile.yaml): served memory is measured as it would run.
    # The optional AudioLDM (v1) runner only where its tests run (the shared server): one process fewer to start
    # in every other server tree.
    home = str(tmp_path_factory.mktemp("bentoml_home"))
    return {
        **os.environ,
        "BENTOML_HOME": home,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "AUDIO_STUDIO_AUDIOLDM_ENABLED": "false",
    }


SEGMENTS_ENV = {"AUDIO_STUDIO_CRITIQUE_SEGMENT_SECONDS": "4", "AUDIO_STUDIO_CRITIQUE_SEGMENT_OVERLAP_SECONDS": "1"}
CORS_ORIGIN = "https://studio.example"  # the shared server lets this origin read its answers (tests/test_http.py)


@pytest.fixture(scope="session")
def stray_receiver() -> Iterator[OTLPReceiver]:
    """An OTLP receiver named only by OpenTelemetry's own variables in the shared server's environment: tracing
    exports only where `AUDIO_STUDIO_OTLP_ENDPOINT` is set (tests/test_tracing.py), so this one receives nothing."""
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def server(shared_server: Served) -> str:
    """The URL of the shared server (`shared_server`)."""
    return shared_server.url


@pytest.fixture(scope="session")
def shared_server(
    tiny_audioldm2: Checkpoint,
    serve_env: dict[str, str],
    stray_receiver: OTLPReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """A real `bentoml serve` of the front service and its runners on 127.0.0.1, tiny profile, shared by the suite.

    Long recordings are heard in segments of 4 s overlapping by 1 s (tests/test_studio.py), not the tiny
    checkpoint's 600 s: 2.5 times that would pass the 20-minute upload limit.
    """
    env = {
        **serve_env,
        **SEGMENTS_ENV,
        "AUDIO_STUDIO_CORS_ORIGINS": CORS_ORIGIN,
        "AUDIO_STUDIO_AUDIOLDM_ENABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": stray_receiver.endpoint.removesuffix("/v1/traces"),
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": stray_receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    served = Served("service:AudioStudio", env, tmp_path_factory.mktemp("serve") / "serve.log").start()
    try:
        yield served.wait_ready()
    finally:
        served.stop()


RESTARTABLE_GRACE_S = 3  # the restartable server's shutdown grace
WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()  # the restartable server's, for every caller


@pytest.fixture(scope="session")
def restartable(serve_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the tests that kill, restart, freeze or fill it (tests/test_faults.py, test_jobs.py,
    test_webhooks.py): one start instead of one per module. AudioLDM2 takes two jobs at a time and the job API
    four; results are kept for a day, longer than any restart on a slow machine (expiry itself is checked against
    the store's clock in tests/unit/test_job_store.py, never by racing a restart); a 3 s shutdown grace; webhooks
    may go to 127.0.0.1 (listed by itself) and any public host, signed with WEBHOOK_SECRET; no playground page,
    as production deployments that do not want it set."""
    folder = tmp_path_factory.mktemp("restartable")
    (folder / "webhook-secrets").write_text(f"# every caller\n* {WEBHOOK_SECRET}\n")
    env = {
        **serve_env,
        "AUDIO_STUDIO_AUDIOLDM2_MAX_BATCH_SIZE": "2",
        "AUDIO_STUDIO_JOBS_MAX_ACTIVE": "4",
        "AUDIO_STUDIO_JOB_RETENTION_S": "86400",
        "AUDIO_STUDIO_PLAYGROUND": "false",
        "AUDIO_STUDIO_SHUTDOWN_GRACE_S": str(RESTARTABLE_GRACE_S),
        "AUDIO_STUDIO_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,*",
        "AUDIO_STUDIO_WEBHOOK_SECRETS_FILE": str(folder / "webhook-secrets"),
        "AUDIO_STUDIO_WEBHOOK_RETRY_S": "300",
    }
    served = Served("service:AudioStudio", env, folder / "serve.log").start()
    try:
        yield served.wait_ready()
    finally:
        for worker in psutil.Process(served.process.pid).children(recursive=True) if served.process else ():
            with contextlib.suppress(psutil.Error):
                worker.resume()  # a frozen worker cannot act on SIGTERM
        served.stop()


@dataclass(frozen=True)
class Secured:
    """A server with API keys, small quotas and tracing to a real OTLP/HTTP receiver (tests/otlp_receiver.py)."""

    served: Served
    keys_file: Path
    keys: dict[str, str]  # name -> key
    receiver: OTLPReceiver

    @property
    def url(self) -> str:
        return self.served.url

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


SECURED_KEY_NAMES = (
    "alpha",
    "beta",
    "gamma",
    "queue",
    "trace",
    "sighup",
    "models",
    "stall-json",
    "stall-form",
    "admitted",
    "race",
    "client",
)
SECURED_QUOTAS = {
    "AUDIO_STUDIO_KEY_MAX_IN_FLIGHT": "4",
    "AUDIO_STUDIO_KEY_RATE_PER_MINUTE": "6",
    "AUDIO_STUDIO_KEY_BURST": "4",
    "AUDIO_STUDIO_AUDIOLDM2_MAX_BATCH_SIZE": "2",
    "AUDIO_STUDIO_AUDIOLDM2_MAX_QUEUED": "1",
    "AUDIO_STUDIO_MUSIC_FLAMINGO_MAX_BATCH_SIZE": "2",
    "AUDIO_STUDIO_MUSIC_FLAMINGO_MAX_QUEUED": "1",
    "AUDIO_STUDIO_JOBS_MAX_ACTIVE_PER_KEY": "2",
    "AUDIO_STUDIO_BODY_TIMEOUT_S": "3",  # a stalled upload is dropped within seconds (tests/test_access.py)
}


def keys_file_text(keys: dict[str, str]) -> str:
    lines = ["# audio-studio test keys: sha256 digests, never the keys"]
    lines += [f"sha256:{hashlib.sha256(key.encode()).hexdigest()} {name}" for name, key in keys.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def secured(
    tiny_audioldm2: Checkpoint, serve_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured")
    keys = {name: f"{name}-{secrets.token_urlsafe(24)}" for name in SECURED_KEY_NAMES}
    keys_file = folder / "api-keys"
    keys_file.write_text(keys_file_text(keys))
    with OTLPReceiver() as receiver:
        env = {
            **serve_env,
            **SECURED_QUOTAS,
            "AUDIO_STUDIO_API_KEYS_FILE": str(keys_file),
            "AUDIO_STUDIO_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export spans every 0.2 s instead of 5 s
        }
        served = Served("service:AudioStudio", env, folder / "serve.log").start()
        try:
            yield Secured(served.wait_ready(), keys_file, keys, receiver)
        finally:
            served.stop()


@dataclass(frozen=True)
class Remote:
    """Each runner in its own `bentoml serve` (as pods on Kubernetes), and two fronts reaching them by URL with
    their jobs in one real Redis: the distributed topology (tests/test_topology.py) and the replicated job API
    (tests/test_jobs_redis.py) share this tree, which takes about 30 s to start (each stage side by side)."""

    runners: dict[str, Served]  # runner name -> its process
    fronts: tuple[Served, Served]
    redis: RedisServer


REMOTE_INLINE_RESULT_BYTES = 200_000  # a 2 s WAV (64 kB) stays in Redis, a 20 s one (640 kB) goes to the shared folder


@pytest.fixture(scope="session")
def remote(serve_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    logs = tmp_path_factory.mktemp("remote")
    redis = RedisServer(tmp_path_factory.mktemp("remote-redis")).start()
    runners = {
        "audioldm2": Served("runners.audioldm2:AudioLDM2Runner", serve_env, logs / "audioldm2.log"),
        "music_flamingo": Served("runners.music_flamingo:MusicFlamingoRunner", serve_env, logs / "flamingo.log"),
    }
    started: list[Served] = []
    try:
        started.extend(runners.values())
        start_side_by_side(*runners.values())
        env = {
            **serve_env,
            "AUDIO_STUDIO_AUDIOLDM2_URL": runners["audioldm2"].url,
            "AUDIO_STUDIO_MUSIC_FLAMINGO_URL": runners["music_flamingo"].url,
            "AUDIO_STUDIO_JOB_STORE": redis.url,
            "AUDIO_STUDIO_JOB_STALE_S": "15",  # a dead front's jobs are taken over sooner than the default 30 s
            "AUDIO_STUDIO_JOB_DATA_DIR": str(logs / "shared-volume"),
            "AUDIO_STUDIO_JOB_INLINE_RESULT_BYTES": str(REMOTE_INLINE_RESULT_BYTES),
        }
        fronts = (
            Served("service:AudioStudio", env, logs / "front-a.log"),
            Served("service:AudioStudio", env, logs / "front-b.log"),
        )
        started.extend(fronts)
        start_side_by_side(*fronts)
        yield Remote(runners, fronts, redis)
    finally:
        for served in started:
            served.stop()
        redis.stop()
