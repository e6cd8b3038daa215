"""The OpenAI-compatible routes' own logic, without a server: messages read as a conversation, callers' JSON schemas
checked, errors reshaped, stop strings, and the engine's side (turns, rows ended by the caller)."""

from __future__ import annotations

import base64
import enum
import json
from pathlib import Path

import numpy as np
import openai.lib._pydantic as sdk_schemas
import pytest
import torch
from pydantic import BaseModel, Field

from front.openai_api.chat import first_stop, read_chat
from front.openai_api.errors import Refusal, openai_error, param_name
from front.openai_api.json_schemas import ANY_OBJECT, SchemaRefused, checked_schema
from front.openai_api.protocol import ChatCompletionRequest
from models.music_flamingo import CritiqueJob, MusicFlamingoEngine, Turn, load_music_flamingo
from models.tiny_music_flamingo import MF_VARIANT, save_tiny_music_flamingo


def chat(*messages: dict, **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "music-flamingo", "messages": list(messages), **fields})


def audio(payload: bytes = b"RIFF....WAVE") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(payload).decode(), "format": "wav"}}


def test_messages_become_turns_with_their_audio_and_system_text_first() -> None:
    request = chat(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hear this."}, audio(b"first")]},
        {"role": "assistant", "content": "Heard."},
        {"role": "user", "content": [audio(b"second"), {"type": "text", "text": "And this?"}]},
    )
    read = read_chat(request)
    assert read.audio == [b"first", b"second"] and read.prompt == "And this?"
    assert [(t.role, t.text, t.clips) for t in read.conversation.history] == [
        ("user", "Be brief.\n\nHear this.", 1),
        ("assistant", "Heard.", 0),
    ]
    turns = read.conversation.turns(read.prompt, clips=2)
    assert [(t.role, t.clips) for t in turns] == [("user", 1), ("assistant", 0), ("user", 1)]
    assert all(t.clips == 0 for t in read.conversation.turns("summary", clips=0))  # a summary hears no audio


def test_data_urls_are_read_and_remote_urls_refused() -> None:
    url = "data:audio/wav;base64," + base64.b64encode(b"bytes").decode()
    read = read_chat(chat({"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": url}}]}))
    assert read.audio == [b"bytes"]
    for bad, why in [("https://example.com/a.wav", "fetches no remote audio"), ("data:audio/wav,raw", "base64")]:
        with pytest.raises(Refusal) as refused:
            read_chat(chat({"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": bad}}]}))
        assert refused.value.param == "messages[0].content[0].audio_url.url" and why in refused.value.message


@pytest.mark.parametrize(
    ("messages", "fields", "param"),
    [
        ([{"role": "user", "content": "x"}], {"model": "gpt-4o"}, "model"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], {}, "messages"),
        ([{"role": "user", "content": [audio(), audio(), audio()]}], {}, "messages"),
        ([{"role": "system", "content": [audio()]}, {"role": "user", "content": "x"}], {}, "messages[0].content"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "@@", "format": "wav"}}]}], {},
         "messages[0].content[0].input_audio.data"),
        ([{"role": "user", "content": "x"}], {"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
    ],
)  # fmt: skip
def test_what_cannot_be_served_is_refused_naming_the_field(messages: list, fields: dict, param: str) -> None:
    with pytest.raises(Refusal) as refused:
        read_chat(chat(*messages, **fields))
    assert refused.value.param == param


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    count: int = Field(ge=0, le=9)
    color: Color | None


class Outer(BaseModel):
    items: list[Inner] = Field(max_length=3)
    name: str = Field(max_length=20)
    scores: list[float] = Field(min_length=1)


def test_the_sdks_schemas_pass_and_what_decoding_ignores_is_refused_by_keyword() -> None:
    assert json.loads(checked_schema(sdk_schemas.to_strict_json_schema(Outer)))["$defs"]["Inner"]
    checked_schema(json.loads(ANY_OBJECT))
    refused = {
        "not": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
        "uniqueItems": {"type": "array", "uniqueItems": True},
        "format": {"type": "string", "format": "email"},
        "if": {"if": {"type": "string"}},
        "refers to itself": {"$ref": "#/$defs/A", "$defs": {"A": {"properties": {"a": {"$ref": "#/$defs/A"}}}}},
        "only local references": {"$ref": "https://example.com/schema.json"},
        "bytes": {"enum": ["x" * 100] * 200},
        "deeper": json.loads('{"items":' * 14 + "{}" + "}" * 14),
    }
    for needle, schema in refused.items():
        with pytest.raises(SchemaRefused) as error:
            checked_schema(schema)
        assert needle in str(error.value), (needle, str(error.value))
    assert checked_schema({"type": "object", "properties": {"not": {"type": "string"}}})  # a property named `not`


def test_errors_take_openais_shape_with_the_openai_field_names() -> None:
    native = {"error": "json_schema: cannot", "kind": "invalid_input", "detail": [{"loc": ["json_schema"]}]}
    assert openai_error(400, native, "/v1/chat/completions") == {
        "error": {"message": "json_schema: cannot", "type": "invalid_request_error", "param": "response_format",
                  "code": "invalid_input"}
    }  # fmt: skip
    unknown = openai_error(404, {"error": "no", "kind": "not_found", "detail": [{"loc": ["model"]}]})
    assert unknown["error"]["code"] == "model_not_found" and unknown["error"]["type"] == "not_found_error"
    assert openai_error(503, {"error": "down", "kind": "unavailable"})["error"]["type"] == "server_error"
    assert param_name(["messages", 0, "content", 1, "input_audio", "data"]) == "messages[0].content[1].input_audio.data"


def test_the_first_stop_string_written_wins() -> None:
    assert first_stop("a cat sat on a mat", ["mat", "sat"]) == 6
    assert first_stop("nothing here", ["zzz"]) is None


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> MusicFlamingoEngine:
    path: Path = tmp_path_factory.mktemp("openai") / MF_VARIANT
    save_tiny_music_flamingo(path, MF_VARIANT)
    model, processor = load_music_flamingo(str(path), torch.device("cpu"), torch.float32)
    return MusicFlamingoEngine(model, processor)


def test_turns_go_through_the_chat_template_with_their_audio(engine: MusicFlamingoEngine) -> None:
    clip = np.zeros(16_000, dtype=np.float32)
    job = CritiqueJob(
        None, [clip], 4, turns=(Turn("user", "Hear this.", 1), Turn("assistant", "Heard."), Turn("user", "And?"))
    )
    text = engine.processor.apply_chat_template(engine.conversation(job), tokenize=False, add_generation_prompt=True)
    assert text.index("<sound>") < text.index("Hear this.") < text.index("Heard.") < text.index("And?")
    assert "Music Flamingo" in text  # the checkpoint's own system prompt stays
    single = CritiqueJob("And?", [clip], 4)
    assert engine.count_prompt_tokens(job) > engine.count_prompt_tokens(single)
    with pytest.raises(ValueError, match="carry every clip"):
        engine.check(CritiqueJob(None, [clip], 4, turns=(Turn("user", "x", 0),)))


def test_a_row_the_caller_ends_keeps_only_its_own_tokens(engine: MusicFlamingoEngine) -> None:
    jobs = [CritiqueJob("Go on.", [], 40, do_sample=True, temperature=1.5, seed=s) for s in (1, 2)]
    free = engine.generate(jobs)
    ended = engine.generate(jobs, stopped=lambda tokens: [tokens.shape[1] >= 5, False])
    assert ended[0].stopped and ended[0].tokens_generated == 5 and ended[0].token_ids == free[0].token_ids[:5]
    assert not ended[1].stopped and ended[1].token_ids == free[1].token_ids
