"""The Python client package (cli/audio_studio) against a real tiny-profile server: every API as a job and
synchronously, progress in order, cancel, a 429 with its Retry-After, an event stream resumed after a cut, and
the examples of docs/client.md run as written."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audio_files import audio_file
from tests.conftest import Secured

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cli"))

from audio_studio import (
    ApiError,
    AsyncClient,
    Audio,
    Client,
    JobCancelled,
    JobStatus,
)

ROOT = Path(__file__).resolve().parent.parent
FAST = {"duration": 1, "steps": 2}


def assert_in_order(statuses: list[JobStatus]) -> None:
    fractions = [status.progress.fraction for status in statuses]
    assert fractions == sorted(fractions) and statuses[-1].state == "succeeded", statuses
    assert all(a != b for a, b in itertools.pairwise(statuses)), "a status was repeated"


def test_every_api_as_a_job_and_synchronously(server: str, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(audio_file("wav", seconds=2))
    seen: list[JobStatus] = []
    with Client(server) as client:
        as_job = client.generate("rain", seed=5, on_progress=seen.append, **FAST)
        assert as_job.data == client.generate("rain", seed=5, job=False, **FAST).data
        assert (as_job.seed, as_job.format, as_job.media_type) == (5, "wav", "audio/wav")
        assert_in_order(seen)

        candidates = client.generate_candidates("rain", num_waveforms=2, seed=9, format="flac", **FAST)
        assert [a.format for a in candidates] == ["flac", "flac"] and len({a.seed for a in candidates}) == 2
        assert candidates == client.generate_candidates(
            "rain", num_waveforms=2, seed=9, format="flac", job=False, **FAST
        )

        transformed = client.transform(clip, "jazz", seed=3, steps=2)
        assert transformed.data == client.transform(clip.read_bytes(), "jazz", seed=3, steps=2, job=False).data

        critique = client.critique(clip, preset="key", max_new_tokens=4)
        assert critique.text == client.critique(clip, preset="key", max_new_tokens=4, job=False).text
        assert critique.tokens_generated >= 1 and critique.raw["preset"] == "key"

        sampled = {"preset": "describe", "max_new_tokens": 24, "do_sample": True, "seed": 11}
        stream = client.stream_critique(clip, **sampled)
        pieces = list(stream)
        assert stream.result is not None and "".join(pieces) == stream.result.text
        assert stream.result.text == client.critique(clip, job=False, **sampled).text


def test_async_client_cancels_a_running_job(server: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(server) as client:
            job = await client.submit_generate("drone", duration=30, steps=400, seed=1)
            async for status in job.events():
                if status.state == "running":
                    break
            await job.cancel()
            with pytest.raises(JobCancelled):
                await job.wait()
            assert (await client.job(job.id)).last.state == "cancelled"
            with pytest.raises(ApiError) as refused:
                await job.result()
            assert (refused.value.status, refused.value.kind) == (409, "conflict")

    asyncio.run(scenario())


def test_refusals_carry_the_kind_the_field_and_retry_after(secured: Secured) -> None:
    with Client(secured.url, api_key=secured.keys["client"]) as client:
        with pytest.raises(ApiError) as bad:
            client.generate("rain", duration=601, job=False)
        assert (bad.value.status, bad.value.kind, bad.value.field) == (400, "invalid_input", "duration")
        refusals = []
        for _ in range(10):  # the key's burst is 4; the token bucket then refuses with the time it refills in
            with pytest.raises(ApiError) as refused:
                client.generate("rain", duration=601, job=False)
            refusals.append(refused.value)
            if refused.value.status == 429:
                break
    limited = refusals[-1]
    assert (limited.status, limited.kind, limited.retryable) == (429, "rate_limited", True)
    assert limited.retry_after is not None and limited.retry_after > 0


class CuttingProxy:
    """A TCP proxy to the server that cuts a connection as soon as it carried one job status event, as a
    restarting ingress would; other requests pass untouched."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._answers, args=(upstream, downstream), daemon=True).start()
            threading.Thread(target=self._requests, args=(downstream, upstream), daemon=True).start()

    @staticmethod
    def _requests(downstream: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := downstream.recv(65536):
                upstream.sendall(data)

    def _answers(self, upstream: socket.socket, downstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                downstream.sendall(data)
                if b"event: status" in data:
                    self.cuts += 1
                    for end in (downstream, upstream):
                        with contextlib.suppress(OSError):
                            end.shutdown(socket.SHUT_RDWR)
                        end.close()
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cutting_proxy(server: str) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(server)
    yield proxy
    proxy.close()


def test_an_event_stream_cut_by_the_network_resumes_where_it_left_off(cutting_proxy: CuttingProxy) -> None:
    seen: list[JobStatus] = []
    with Client(cutting_proxy.url) as client:
        audio = client.generate("rain", duration=5, steps=30, seed=2, on_progress=seen.append)
    assert isinstance(audio, Audio) and audio.seed == 2
    assert cutting_proxy.cuts >= 2, "the job ended before the stream was cut twice: make it longer"
    assert_in_order(seen)


def test_the_guides_examples_run_as_written(server: str, tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "client.md").read_text()
    examples = re.findall(r"```python\n(.*?)```", guide, re.S)
    assert examples
    (tmp_path / "take.wav").write_bytes(audio_file("wav", seconds=2))
    for example in examples:
        code = example.replace("http://localhost:3000", server)
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(ROOT / "cli")},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"{example}\n{done.stderr[-2000:]}"
