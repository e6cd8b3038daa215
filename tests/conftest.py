"""Shared fixtures: the tiny profile, an in-process engine, and a real `bentoml serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# Before any project import: settings are read once, at import.
os.environ["AUDIO_STUDIO_PROFILE"] = "tiny"
os.environ.setdefault("AUDIO_STUDIO_TINY_MODEL_DIR", str(ROOT / ".cache" / "tiny-models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from models.audioldm2 import AudioLDM2Engine, load_pipeline  # noqa: E402
from models.device import pick_device  # noqa: E402
from models.profiles import Checkpoint, audioldm2_checkpoint  # noqa: E402
from settings import SETTINGS  # noqa: E402

SERVER_START_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def tiny_audioldm2() -> Checkpoint:
    return audioldm2_checkpoint(SETTINGS, None)


@pytest.fixture(scope="session")
def engine(tiny_audioldm2: Checkpoint) -> AudioLDM2Engine:
    device, dtype = pick_device(torch.float16)
    return AudioLDM2Engine(load_pipeline(str(tiny_audioldm2.path), device, dtype))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server(tiny_audioldm2: Checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `bentoml serve` of the front service and its runner on 127.0.0.1, tiny profile."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home"))}
    with log_path.open("wb") as log:
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
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"bentoml serve not ready in {SERVER_START_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
