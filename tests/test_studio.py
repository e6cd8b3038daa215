"""The studio over HTTP (tiny profile): structured critique, long recordings in segments, ranking by listening.

The session server hears long recordings in segments of 4 s overlapping by 1 s (tests/conftest.py SEGMENTS_ENV).
"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from critique_format import StructuredCritique, clamp_times, shift_times
from front.studio import CRITIC_SHARE, SEGMENTS_SHARE
from jobs.progress import progress_of
from jobs.records import JobProgress
from runners.progress import DECODER_PHASES
from tests.audio_files import audio_file
from tests.jobs_client import assert_progress_moves_forward, follow, result, submit

TIMEOUT = 300
JSON = {"output": "json", "max_new_tokens": "640"}  # the tiny tokenizer keeps ~380 tokens to close the object


def critique(server: str, seconds: float | None = 3.0, reference: float | None = None, **fields) -> httpx.Response:
    files = {}
    if seconds is not None:
        files["audio"] = ("take.wav", audio_file("wav", seconds, hz=220), "audio/wav")
    if reference is not None:
        files["reference"] = ("reference.wav", audio_file("wav", reference, hz=330), "audio/wav")
    form = {k: str(v) for k, v in fields.items()}
    return httpx.post(f"{server}/critique", data=form, files=files or None, timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("preset", "reference", "audio"),
    [("feedback", None, 3.0), ("compare", 2.0, 3.0), (None, None, None), ("key", None, 1.0)],
)
def test_structured_critique_validates_against_the_published_schema(
    server: str, preset: str | None, reference: float | None, audio: float | None
) -> None:
    fields = {**JSON, **({"preset": preset} if preset else {"prompt": "How does it sound?"})}
    response = critique(server, audio, reference, **fields, do_sample="true", temperature="1.5", seed="4")
    assert response.status_code == 200, response.text
    body = response.json()
    structured = StructuredCritique.model_validate(body["structured"])
    assert json.loads(body["text"]) == body["structured"]  # the same object, key for key
    assert ("reference_differences" in body["structured"]) == (reference is not None)
    for finding in structured.findings:
        assert 0 <= finding.start_s <= finding.end_s <= (audio or 0) + 1e-6
    assert body["long_audio"] == "truncate" and body["segments"] == []


def test_structured_and_free_text_requests_share_the_runner(server: str) -> None:
    """Concurrent structured and free-text critiques: each gets its own kind of answer, the greedy ones as alone."""
    requests = [dict(JSON, preset="feedback"), {"preset": "describe", "max_new_tokens": "30"}] * 2
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda fields: critique(server, **fields), requests))
    for fields, response in zip(requests, together, strict=True):
        assert response.status_code == 200, response.text
        assert (response.json()["structured"] is not None) == (fields.get("output") == "json")
        assert response.json()["text"] == critique(server, **fields).json()["text"]


def test_a_budget_too_small_for_the_object_names_max_new_tokens(server: str) -> None:
    response = critique(server, output="json", max_new_tokens="40", preset="feedback")
    assert response.status_code == 400, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["max_new_tokens"] and "at least" in error["msg"], response.text


def test_segments_cover_the_whole_recording_and_are_summarised(server: str) -> None:
    response = critique(server, 10.0, long_audio="segments", preset="feedback", seed="2", **JSON)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["long_audio"] == "segments"
    bounds = [(s["start_s"], s["end_s"]) for s in body["segments"]]
    assert bounds == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0)]  # 2.5 segments of 4 s, 1 s overlap
    expected = []
    for segment in body["segments"]:
        own = clamp_times(StructuredCritique.model_validate_json(segment["text"]), 4.0)
        expected += shift_times(own, segment["start_s"]).findings
    structured = StructuredCritique.model_validate(body["structured"])
    assert structured.findings == sorted(expected, key=lambda f: (f.start_s, f.end_s))
    assert all(0 <= f.start_s <= f.end_s <= 10.0 for f in structured.findings)
    # The summarising pass wrote the summary: it is none of the segments' own.
    assert structured.summary not in [
        StructuredCritique.model_validate_json(s["text"]).summary for s in body["segments"]
    ]


def test_segments_in_free_text_and_truncate_unchanged(server: str) -> None:
    fields = {"preset": "feedback", "max_new_tokens": "12", "seed": "5"}
    segmented = critique(server, 10.0, long_audio="segments", **fields).json()
    assert len(segmented["segments"]) == 3 and segmented["tokens_generated"] > 12
    truncated = critique(server, 10.0, long_audio="truncate", **fields).json()
    default = critique(server, 10.0, **fields).json()
    assert truncated["text"] == default["text"] and truncated["segments"] == [] == default["segments"]
    assert truncated["audio_seconds"][0]["seconds"] == pytest.approx(10.0, abs=0.01)


def test_a_recording_too_long_for_its_segments_is_refused(server: str) -> None:
    response = critique(server, 30.0, long_audio="segments", max_new_tokens="4")  # 8 segments of 4 s cover 25 s
    assert response.status_code == 400, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["audio"] and "8 segments" in error["msg"], response.text


def test_critic_ranking_orders_by_the_critic_and_keeps_seeds(server: str) -> None:
    body = {"prompt": "rain on a roof", "duration": 1, "steps": 2, "seed": 40, "num_waveforms": 4, "rank_by": "critic"}
    response = httpx.post(f"{server}/generate/json", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    waveforms = response.json()["waveforms"]
    keys = [(w["critic_score"], w["clap_score"]) for w in waveforms]
    assert all(1 <= score <= 10 and isinstance(clap, float) for score, clap in keys)
    assert keys == sorted(keys, reverse=True)
    assert all(isinstance(w["critic_reason"], str) for w in waveforms)
    assert sorted(w["seed"] for w in waveforms) == [40, 41, 42, 43]
    best = waveforms[0]
    alone = httpx.post(
        f"{server}/generate/json", json={**body, "num_waveforms": 1, "seed": best["seed"]}, timeout=TIMEOUT
    ).json()["waveforms"][0]
    assert base64.b64decode(alone["audio_base64"]) == base64.b64decode(best["audio_base64"])
    file = httpx.post(f"{server}/generate", json=body, timeout=TIMEOUT)
    assert file.headers["x-critic-score"] == str(best["critic_score"]) and file.headers["x-seed"] == str(best["seed"])


def test_jobs_carry_the_studio_options(server: str) -> None:
    """A segmented structured critique as a job: progress only moves forward, the answer is the synchronous one."""
    fields = {"long_audio": "segments", "preset": "feedback", "seed": "8", **JSON}
    files = {"audio": ("take.wav", audio_file("wav", 10.0, hz=220), "audio/wav")}
    status = submit(server, "critique", data=fields, files=files)
    statuses = follow(server, status["id"], every_s=0.02)
    assert_progress_moves_forward(statuses)
    answer = result(server, status["id"]).json()
    synchronous = critique(server, 10.0, **fields).json()
    assert answer["structured"] == synchronous["structured"] and answer["segments"] == synchronous["segments"]


def test_staged_progress_fills_each_stages_share_of_the_scale() -> None:
    """A segmented critique's progress, as Music Flamingo's runner places its tokens: the segments' batch fills
    0-0.85, the summarising pass 0.85-1."""
    before = JobProgress(phase="queued", fraction=0.0)
    halfway = DECODER_PHASES.place("s", "decoding", done=5, total=10)
    segments = progress_of(halfway, before, (0.0, SEGMENTS_SHARE))
    summary = progress_of(DECODER_PHASES.place("a", "prefill"), segments, (SEGMENTS_SHARE, 1.0))
    done = progress_of(DECODER_PHASES.place("a", "finished"), summary, (SEGMENTS_SHARE, 1.0))
    assert 0 < segments.fraction < SEGMENTS_SHARE < summary.fraction < done.fraction == 1.0
    assert (segments.unit, segments.done, segments.total) == ("tokens", 5, 10)


def test_a_critic_ranked_job_moves_from_the_generation_to_the_critic(server: str) -> None:
    body = {"prompt": "rain", "duration": 1, "steps": 20, "num_waveforms": 2, "seed": 3, "rank_by": "critic"}
    status = submit(server, "generate/json", json=body)
    statuses = follow(server, status["id"], every_s=0.02)
    assert_progress_moves_forward(statuses)
    critic_stage = [s["progress"] for s in statuses if s["progress"]["fraction"] > 1.0 - CRITIC_SHARE]
    assert all(p["phase"] in ("ranking", "finished") for p in critic_stage), critic_stage
    ranked = result(server, status["id"]).json()["waveforms"]
    assert ranked == httpx.post(f"{server}/generate/json", json=body, timeout=TIMEOUT).json()["waveforms"]
