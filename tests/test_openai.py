"""The OpenAI-compatible routes, driven by the official `openai` SDK against the shared tiny-profile server."""

from __future__ import annotations

import base64
import enum
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import httpx
import openai
import pytest
import soundfile
from pydantic import BaseModel, Field

from tests.audio_files import audio_file
from tests.conftest import Secured
from tests.metrics import batch_counts, cancelled_jobs

TIMEOUT = 300
CHAT_MODEL = "music-flamingo"


def sdk(server: str, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=api_key, timeout=TIMEOUT, max_retries=0)


def audio_part(seconds: float, container: str = "wav", hz: float = 220.0) -> dict[str, Any]:
    data = base64.b64encode(audio_file(container, seconds, hz=hz)).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": container}}


def user(*parts: dict[str, Any] | str) -> dict[str, Any]:
    content = [{"type": "text", "text": part} if isinstance(part, str) else part for part in parts]
    return {"role": "user", "content": content}


def critique_form(server: str, prompt: str, seconds: float, max_new_tokens: int) -> str:
    files = {"audio": ("clip.wav", audio_file("wav", seconds), "audio/wav")}
    fields = {"prompt": prompt, "max_new_tokens": str(max_new_tokens), "seed": "0"}
    response = httpx.post(f"{server}/critique", data=fields, files=files, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["text"]


def test_text_and_audio_in_text_out(server: str) -> None:
    client = sdk(server)
    asked = [
        [user("How is the intonation?", audio_part(1.0))],
        [user("Compare them.", audio_part(1.0), audio_part(1.5, "flac", hz=330.0))],  # performance, then reference
        [user("Name three scales.")],
        [user(audio_part(1.0, "mp3"))],
        [
            {"role": "system", "content": "Be brief."},
            user("A question", audio_part(1.0)),
            {"role": "assistant", "content": "An answer."},
            user("A follow-up."),
        ],
    ]
    for messages in asked:
        answer = client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=6, seed=1)
        choice = answer.choices[0]
        assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
        assert choice.finish_reason in ("stop", "length")
        assert answer.object == "chat.completion" and answer.model == client.models.list().data[0].id
        assert 1 <= answer.usage.completion_tokens <= 6 and answer.usage.prompt_tokens > 0
        assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    with_audio = client.chat.completions.create(model=CHAT_MODEL, messages=asked[0], max_tokens=6, seed=1)
    text_only = client.chat.completions.create(model=CHAT_MODEL, messages=asked[2], max_tokens=6, seed=1)
    assert with_audio.usage.prompt_tokens > text_only.usage.prompt_tokens + 20  # a second of audio is ~25 tokens


def test_the_same_request_on_chat_and_on_critique_gives_the_same_text(server: str) -> None:
    prompt = "Describe the tone."
    answer = sdk(server).chat.completions.create(
        model=CHAT_MODEL, messages=[user(prompt, audio_part(1.0))], max_tokens=12, seed=0
    )
    assert answer.choices[0].message.content == critique_form(server, prompt, 1.0, 12)


def test_a_stream_adds_up_to_the_unstreamed_answer_with_usage_last(server: str) -> None:
    client = sdk(server)
    request = {"model": CHAT_MODEL, "messages": [user("Play on.", audio_part(1.0))], "max_tokens": 320,
               "temperature": 1.5, "seed": 7}  # fmt: skip
    whole = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3  # written piece by piece
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert not chunks[-1].choices and chunks[-1].usage == whole.usage  # usage last, alone
    plain = list(client.chat.completions.create(**request, stream=True))
    assert all(c.usage is None for c in plain)


def test_a_stop_string_ends_the_answer_before_it(server: str) -> None:
    client = sdk(server)
    request = {"model": CHAT_MODEL, "messages": [user("Go on.")], "max_tokens": 200, "temperature": 1.5, "seed": 3}
    free = client.chat.completions.create(**request).choices[0].message.content
    assert len(free) >= 20
    stop = free[len(free) // 2 : len(free) // 2 + 3]  # a piece of the free answer: the stopped one ends before it
    cut = free[: free.find(stop)]
    stopped = client.chat.completions.create(**request, stop=[stop, "never-written"])
    assert stopped.choices[0].message.content == cut and stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens < 200
    chunks = list(client.chat.completions.create(**request, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut


class Mood(str, enum.Enum):
    CALM = "calm"
    TENSE = "tense"
    JOYFUL = "joyful"


class Tempo(BaseModel):
    bpm: int = Field(ge=40, le=240)
    steady: bool


class Review(BaseModel):
    """Nested objects, an enum, a bounded list and an integer range."""

    mood: Mood
    tempo: Tempo
    tags: list[Annotated[str, Field(max_length=12)]] = Field(min_length=1, max_length=3)


class Mistake(BaseModel):
    at_s: float
    note: str = Field(max_length=40)


class Lesson(BaseModel):
    mistakes: list[Mistake] = Field(max_length=2)
    grade: int = Field(ge=1, le=5)


class Verdict(BaseModel):
    keep: bool
    key: Mood | None
    scores: list[int] = Field(min_length=2, max_length=2)


@pytest.mark.parametrize("schema", [Review, Lesson, Verdict])
def test_parse_returns_an_object_of_the_callers_schema(server: str, schema: type[BaseModel]) -> None:
    for seed in (0, 1):
        answer = sdk(server).chat.completions.parse(
            model=CHAT_MODEL,
            messages=[user("Review this.", audio_part(1.0))],
            response_format=schema,
            max_tokens=600,
            temperature=1.0,
            seed=seed,
        )
        parsed = answer.choices[0].message.parsed
        assert isinstance(parsed, schema)
        assert schema.model_validate_json(answer.choices[0].message.content) == parsed


def test_json_object_is_parseable_json(server: str) -> None:
    answer = sdk(server).chat.completions.create(
        model=CHAT_MODEL,
        messages=[user("Answer in JSON.")],
        response_format={"type": "json_object"},
        max_tokens=120,
        temperature=1.0,
        seed=4,
    )
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_a_schema_decoding_cannot_enforce_is_refused_by_name(server: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "not": {"const": "x"}}}, "required": ["a"]}
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(server).chat.completions.create(
            model=CHAT_MODEL,
            messages=[user("x")],
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        )
    error = refused.value.body
    assert "`not`" in error["message"] and error["param"] == "response_format.json_schema.schema"
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_input"


def test_refusals_come_as_the_sdk_exceptions_in_openai_shape(server: str) -> None:
    client = sdk(server)
    bad_base64 = user({"type": "input_audio", "input_audio": {"data": "@@@@", "format": "wav"}})
    remote = user({"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}})
    cases: list[tuple[type[Exception], dict[str, Any], str | None]] = [
        (openai.BadRequestError, {"messages": [user("x")], "max_tokens": 5000}, "max_tokens"),
        (openai.NotFoundError, {"messages": [user("x")], "model": "gpt-4o"}, "model"),
        (openai.BadRequestError, {"messages": [bad_base64]}, "messages[0].content[0].input_audio.data"),
        (openai.BadRequestError, {"messages": [remote]}, "messages[0].content[0].audio_url.url"),
        (openai.BadRequestError, {"messages": [user("x")], "n": 2}, "n"),
        (openai.BadRequestError, {"messages": [user("x"), {"role": "assistant", "content": "y"}]}, "messages"),
        (openai.BadRequestError, {"messages": [user(audio_part(1.0), audio_part(1.0), audio_part(1.0))]}, "messages"),
    ]  # fmt: skip
    for exception, request, param in cases:
        with pytest.raises(exception) as refused:
            client.chat.completions.create(**{"model": CHAT_MODEL, **request})
        assert refused.value.body["param"] == param, refused.value.body
        assert set(refused.value.body) == {"message", "type", "param", "code"}
    not_wav = base64.b64encode(b"just some bytes, not audio" * 10).decode()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[user({"type": "input_audio", "input_audio": {"data": not_wav, "format": "wav"}})],
        )
    assert refused.value.status_code == 415 and refused.value.body["param"] == "messages"


def test_an_oversized_body_gets_413_in_openai_shape(server: str) -> None:
    data = base64.b64encode(bytes(49 * 2**20)).decode()  # 65 MiB of base64: over the route's 64 MiB
    with pytest.raises(openai.APIStatusError) as refused:
        sdk(server).chat.completions.create(
            model=CHAT_MODEL, messages=[user({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})]
        )
    assert refused.value.status_code == 413 and refused.value.body["code"] == "too_large"


def test_chat_and_critique_share_batches_and_greedy_answers_match_alone(server: str) -> None:
    prompts = [f"Question {k}: how is it?" for k in range(8)]
    client = sdk(server)

    def chat(prompt: str) -> str:
        answer = client.chat.completions.create(
            model=CHAT_MODEL, messages=[user(prompt, audio_part(1.0))], max_tokens=8, seed=0
        )
        return answer.choices[0].message.content

    def critique(prompt: str) -> str:
        return critique_form(server, prompt, 1.0, 8)

    alone = [chat(p) for p in prompts] + [critique(p) for p in prompts]
    batches, singles = batch_counts(server, "critique")
    with ThreadPoolExecutor(max_workers=16) as pool:
        chats = [pool.submit(chat, p) for p in prompts]
        critiques = [pool.submit(critique, p) for p in prompts]
        together = [f.result() for f in chats + critiques]
    assert together == alone
    assert alone[:8] == alone[8:]  # the same request by either route is the same row
    after, singles_after = batch_counts(server, "critique")
    assert after - batches <= 8 and (after - batches) - (singles_after - singles) >= 1  # 16 rows in few batches


def test_a_client_that_leaves_a_stream_has_its_row_dropped(server: str) -> None:
    before = cancelled_jobs(server)
    stream = sdk(server).chat.completions.create(
        model=CHAT_MODEL, messages=[user("Go on for long.")], max_tokens=2048, stream=True
    )
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 60
    while cancelled_jobs(server) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled_jobs(server) == before + 1


def test_audio_generate_answers_generates_bytes(server: str) -> None:
    client = sdk(server)
    made = client.post(
        "/audio/generate",
        body={"input": "rain on a tin roof", "audio_length": 2.0, "num_inference_steps": 2, "seed": 5},
        cast_to=httpx.Response,
    )
    native = httpx.post(
        f"{server}/generate",
        json={"prompt": "rain on a tin roof", "duration": 2.0, "steps": 2, "seed": 5},
        timeout=TIMEOUT,
    )
    assert made.content == native.content and made.headers["content-type"] == "audio/wav"
    info = soundfile.info(io.BytesIO(made.content))
    assert info.samplerate == 16_000 and abs(info.duration - 2.0) < 0.05
    flac = httpx.post(
        f"{server}/v1/audio/generate",
        json={"input": "rain", "audio_length": 1.0, "num_inference_steps": 1, "response_format": "flac"},
        timeout=TIMEOUT,
    )
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac"
    for body, param in [
        ({"input": "rain", "response_format": "aac"}, "response_format"),
        ({"input": "rain", "speed": 2.0}, "speed"),
        ({"input": "rain", "audio_length": 9999}, "audio_length"),
        ({"input": "rain", "model": "stable-audio"}, "model"),
    ]:
        refused = httpx.post(f"{server}/v1/audio/generate", json=body, timeout=TIMEOUT)
        assert refused.status_code in (400, 404) and refused.json()["error"]["param"] == param, refused.text


def test_models_lists_what_the_routes_take(server: str) -> None:
    client = sdk(server)
    ids = [model.id for model in client.models.list().data]
    assert CHAT_MODEL in ids and "audioldm2" in ids and ids[0].startswith("nvidia/")
    assert client.models.retrieve("audioldm2").id == "audioldm2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_api_keys_work_as_openai_keys(secured: Secured) -> None:
    answer = sdk(secured.url, secured.keys["client"]).chat.completions.create(
        model=CHAT_MODEL, messages=[user("x")], max_tokens=2
    )
    assert answer.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(secured.url, "not-a-key").chat.completions.create(model=CHAT_MODEL, messages=[user("x")], max_tokens=2)
    assert refused.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        sdk(secured.url, "not-a-key").models.list()
