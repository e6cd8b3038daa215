"""Long-form audio over HTTP (tiny profile): minutes of audio, exact lengths, the cap, and short work served
while a 2-minute render is in flight (the latency ratio itself is measured in bench/long_form.py; the cap's
own length, 10 minutes, in its memory benchmark: on the tiny profile on 2 CPU cores it takes 5 minutes)."""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import numpy as np
import soundfile

RATE = 16_000
TIMEOUT = 600
CHEAP = {"steps": 2, "guidance_scale": 1.0}  # no classifier-free guidance: half the rows


def samples_of(data: bytes) -> np.ndarray:
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert rate == RATE and samples.ndim == 1
    return samples


def test_over_the_cap_is_refused_naming_the_limit(server: str) -> None:
    response = httpx.post(f"{server}/generate", json={"prompt": "x", "duration": 601}, timeout=30)
    assert response.status_code == 400
    [detail] = response.json()["detail"]
    assert detail["loc"] == ["duration"] and "600" in detail["msg"]


def test_a_long_transform_keeps_its_length(server: str) -> None:
    """45 s: longer than one latent (30 s), so it is heard and rendered in windows."""
    t = np.arange(45 * RATE) / RATE
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), RATE, format="WAV")
    response = httpx.post(
        f"{server}/transform",
        data={"prompt": "the same, on strings", "strength": "0.5", "seed": "4", "steps": "2"},
        files={"audio": ("long.wav", buffer.getvalue(), "audio/wav")},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert len(samples_of(response.content)) == 45 * RATE


def test_two_minutes_exactly_with_short_work_served_in_between_and_the_same_bytes_alone(server: str) -> None:
    """A 120 s render is in flight when a 1 s request arrives: the short one is answered first. The same
    request sent again alone gives the same bytes (the render did not depend on what shared its passes)."""
    long_body = {"prompt": "a slowly evolving drone", "duration": 120, "seed": 8, **CHEAP}
    short_body = {"prompt": "a door knock", "duration": 1, "seed": 9, **CHEAP}

    async def scenario() -> tuple[httpx.Response, float, httpx.Response, float]:
        async with httpx.AsyncClient(base_url=server, timeout=TIMEOUT) as client:
            started = time.perf_counter()
            long_task = asyncio.create_task(client.post("/generate", json=long_body))
            await asyncio.sleep(3)  # the render is on the model thread by now
            short = await client.post("/generate", json=short_body)
            short_done = time.perf_counter() - started
            long = await long_task
            return short, short_done, long, time.perf_counter() - started

    short, short_done, long, long_done = asyncio.run(scenario())
    assert short.status_code == 200 and len(samples_of(short.content)) == RATE
    assert long.status_code == 200, long.text
    assert len(samples_of(long.content)) == 120 * RATE
    assert short_done < long_done
    alone = httpx.post(f"{server}/generate", json=long_body, timeout=TIMEOUT)
    assert alone.content == long.content
