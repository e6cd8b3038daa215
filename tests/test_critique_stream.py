"""POST /critique streamed as Server-Sent Events, and a critique job's text so far (tiny Music Flamingo, the shared
server)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from critique_format import StructuredCritique
from tests import jobs_client
from tests.audio_files import audio_file
from tests.metrics import cancelled_jobs

TIMEOUT = 300
SAMPLED = {"prompt": "Describe a fast violin solo.", "do_sample": "true", "temperature": "1.5", "max_new_tokens": "320"}


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    at: float  # time.monotonic() of its arrival


def events(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events from a response's lines (`event:` and `data:` fields, a blank line ends each)."""
    name, data = "", ""
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and name:
            yield Event(name, json.loads(data), time.monotonic())
            name, data = "", ""


def streamed(server: str, files: dict[str, Any] | None = None, **fields: str) -> list[Event]:
    with httpx.stream(
        "POST", f"{server}/critique", data={**fields, "stream": "true"}, files=files, timeout=TIMEOUT
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return list(events(response.iter_lines()))


def unstreamed(server: str, files: dict[str, Any] | None = None, **fields: str) -> dict[str, Any]:
    response = httpx.post(f"{server}/critique", data=fields, files=files, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def without_timings(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key != "timings"}


def check_stream(stream: list[Event], answer: dict[str, Any]) -> None:
    """Deltas then one result; the deltas make the result's text, and the result is the unstreamed answer."""
    *deltas, result = stream
    assert result.name == "result" and {e.name for e in deltas} == {"delta"}, [e.name for e in stream]
    assert "".join(e.data["text"] for e in deltas) == result.data["text"] == answer["text"]
    assert without_timings(result.data) == without_timings(answer)
    if not answer["segments"]:  # else the summary's tokens, where the answer counts the segments' too
        assert deltas[-1].data["tokens"] == answer["tokens_generated"]


def test_the_text_streams_before_the_answer_and_adds_up_to_it(server: str) -> None:
    files = {"audio": ("clip", audio_file("wav", 1.0), "audio/wav")}
    stream = streamed(server, files, **SAMPLED, seed="11")
    check_stream(stream, unstreamed(server, files, **SAMPLED, seed="11"))
    assert len(stream) >= 3 and stream[0].at < stream[-1].at  # text came while the row decoded, not only at the end
    assert stream[0].data["tokens"] < stream[-1].data["tokens_generated"]
    with httpx.stream(  # the header asks too
        "POST",
        f"{server}/critique",
        data={**SAMPLED, "max_new_tokens": "4", "seed": "11"},
        headers={"Accept": "text/event-stream"},
        timeout=TIMEOUT,
    ) as response:
        assert [e.name for e in events(response.iter_lines())][-1] == "result"


def test_structured_output_streams_its_json_and_ends_with_the_object(server: str) -> None:
    fields = {"prompt": "Critique this.", "output": "json", "max_new_tokens": "400", "seed": "3"}
    *deltas, result = streamed(server, **fields)
    decoded = json.loads("".join(e.data["text"] for e in deltas))  # the JSON as the grammar decoded it
    structured = result.data["structured"]
    assert structured == json.loads(result.data["text"])  # `text`: the object validated, serialised again
    assert StructuredCritique.model_validate(decoded).summary == structured["summary"]
    assert without_timings(result.data) == without_timings(unstreamed(server, **fields))


def test_streamed_and_unstreamed_rows_of_one_batch_match(server: str) -> None:
    """Four seeds, each sent streamed and unstreamed at once: eight rows of the runner's batches."""
    seeds = ["21", "22", "23", "24"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        streams = [pool.submit(streamed, server, **SAMPLED, seed=seed) for seed in seeds]
        answers = [pool.submit(unstreamed, server, **SAMPLED, seed=seed) for seed in seeds]
        pairs = [(s.result(), a.result()) for s, a in zip(streams, answers, strict=True)]
    for stream, answer in pairs:
        check_stream(stream, answer)
    assert len({answer["text"] for _, answer in pairs}) == len(seeds)  # sampled rows differ


def test_a_client_that_leaves_mid_stream_has_its_row_dropped(server: str) -> None:
    before = cancelled_jobs(server)
    fields = {"prompt": "Go on for a long time.", "max_new_tokens": "2048", "stream": "true"}
    with httpx.stream("POST", f"{server}/critique", data=fields, timeout=TIMEOUT) as response:
        first = next(events(response.iter_lines()))
    assert first.name == "delta"
    deadline = time.monotonic() + 60
    while cancelled_jobs(server) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled_jobs(server) == before + 1


def test_refusals_before_the_model_are_plain_json(server: str) -> None:
    response = httpx.post(f"{server}/critique", data={"stream": "true", "max_new_tokens": "0", "prompt": "x"})
    assert response.status_code == 400 and response.json()["detail"][0]["loc"] == ["max_new_tokens"]
    response = httpx.post(f"{server}/critique", data={"stream": "true", "preset": "describe"})
    assert response.status_code == 400 and response.json()["kind"] == "invalid_input"
    response = httpx.post(f"{server}/jobs/critique", data={"stream": "true", "prompt": "x"})
    assert response.status_code == 400 and response.json()["detail"][0]["loc"] == ["stream"]


def test_a_critique_job_shows_its_text_so_far(server: str) -> None:
    fields = {**SAMPLED, "max_new_tokens": "400", "seed": "5"}
    job = jobs_client.submit(server, "critique", data=fields)
    seen = [s["progress"].get("text") for s in jobs_client.follow(server, job["id"], every_s=0.05)]
    result = httpx.get(f"{server}/jobs/{job['id']}/result", timeout=30).json()
    partial = [text for text in seen if text]
    assert partial and all(result["text"].startswith(text) for text in partial), (partial, result["text"])


def test_a_recording_in_segments_streams_its_summary(server: str) -> None:
    """The shared server hears 4 s segments: the deltas are the summarising pass's text, the segments' come whole."""
    files = {"audio": ("take", audio_file("wav", 9.0), "audio/wav")}
    fields = {**SAMPLED, "long_audio": "segments", "max_new_tokens": "48", "seed": "8"}
    answer = unstreamed(server, files, **fields)
    assert len(answer["segments"]) == 3
    check_stream(streamed(server, files, **fields), answer)
