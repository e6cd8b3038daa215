"""POST /v1/chat/completions: an OpenAI chat request read as a critique (front/critique_work.py), answered as a chat
completion or as a stream of `chat.completion.chunk` events.

The request becomes the same runner rows /critique sends, so the two routes share the Music Flamingo runner's
batches. Messages map onto the checkpoint's chat template: user and assistant turns as they come, system (and
developer) text before the first user turn's text, the checkpoint's own system prompt kept. Audio parts are
decoded from base64 (`input_audio`, or an `audio_url` holding a `data:` URL) into files that the native upload
checks and decoding read, so the limits are the native ones.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel
from starlette.responses import JSONResponse

from core.work import Work
from front.critique_stream import Answered, Written, critique_pieces, keeping_final
from front.critique_work import Conversation
from front.openai_api.errors import Refusal, openai_error
from front.openai_api.json_schemas import ANY_OBJECT, SchemaRefused, checked_schema
from front.openai_api.protocol import (
    CHAT_COMPLETIONS,
    AssistantMessage,
    AudioUrlPart,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    InputAudioPart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Usage,
    completion_id,
    now,
)
from registry import MUSIC_FLAMINGO
from schemas import ChatTurn, CritiqueOutcome, CritiqueRequest, CritiqueResponse

MODEL_ALIAS = "music-flamingo"
CHAT_BODY_LIMIT = 64 * 1024 * 1024  # base64 audio in JSON: about 48 MiB of files; larger ones go to /critique
DEFAULT_MAX_TOKENS = 512  # /critique's default max_new_tokens
DONE = b"data: [DONE]\n\n"


def chat_model_ids() -> list[str]:
    """The values `model` takes: the deployed checkpoint's id (what answers say), then the short alias."""
    return [MUSIC_FLAMINGO.settings.checkpoint, MODEL_ALIAS]


@dataclass
class ChatInput:
    """A checked chat request: the conversation, the user's last text, and the audio files' bytes in order."""

    request: ChatCompletionRequest
    conversation: Conversation
    prompt: str
    audio: list[bytes] = field(default_factory=list)

    @property
    def max_tokens(self) -> int:
        return self.request.max_completion_tokens or self.request.max_tokens or DEFAULT_MAX_TOKENS

    def critique_request(self, folder: Path) -> CritiqueRequest:
        """The native request these messages amount to, its audio written to files in `folder` (checked already,
        by this route's own model: not validated again, so that a long conversation's text is not held to the
        native prompt's length)."""
        paths = []
        for index, data in enumerate(self.audio):
            paths.append(folder / f"clip-{index}")
            paths[-1].write_bytes(data)
        sampling = bool(self.request.temperature)
        return CritiqueRequest.model_construct(
            audio=paths[:1],
            reference=paths[1:],
            prompt=self.prompt,
            preset=self.request.preset,
            seed=self.request.seed,
            max_new_tokens=self.max_tokens,
            do_sample=sampling,
            temperature=self.request.temperature if sampling else 0.7,
            top_p=self.request.top_p if sampling and self.request.top_p is not None else 1.0,
            long_audio=self.request.long_audio,
            **{name: CritiqueRequest.model_fields[name].default for name in ("output", "stream")},
        )


def read_chat(request: ChatCompletionRequest) -> ChatInput:
    """The request's conversation and audio, or Refusal naming what cannot be served."""
    if request.model not in chat_model_ids():
        raise Refusal(
            "model", f"the model {request.model!r} is not served here; choose {' or '.join(chat_model_ids())}",
            kind="not_found",
        )  # fmt: skip
    given = {request.max_tokens, request.max_completion_tokens} - {None}
    if len(given) > 1:
        raise Refusal("max_completion_tokens", "differs from max_tokens: give one of them, or both equal")
    if request.messages[-1].role != "user":
        raise Refusal("messages", "the last message must be the user's")
    system: list[str] = []
    turns: list[ChatTurn] = []
    audio: list[bytes] = []
    for index, message in enumerate(request.messages):
        text, clips = read_message(message, f"messages[{index}]")
        if clips and message.role != "user":
            raise Refusal(f"messages[{index}].content", f"audio is taken in user messages only, not {message.role}")
        audio += clips
        if message.role in ("system", "developer"):
            system.append(text)
        else:
            turns.append(ChatTurn(role=message.role, text=text, clips=len(clips)))
    if len(audio) > 2:
        raise Refusal("messages", f"{len(audio)} audio parts; at most 2 (the performance, then a reference)")
    first_user = next(i for i, turn in enumerate(turns) if turn.role == "user")
    if system:
        joined = "\n\n".join(part for part in [*system, turns[first_user].text] if part)
        turns[first_user] = turns[first_user].model_copy(update={"text": joined})
    *history, last = turns
    conversation = Conversation(history, response_schema(request), request.stop_sequences)
    return ChatInput(request, conversation, last.text, audio)


def read_message(message: ChatMessage, at: str) -> tuple[str, list[bytes]]:
    """A message's text (its text parts joined) and its audio files' bytes."""
    if isinstance(message.content, str):
        return message.content, []
    texts, clips = [], []
    for index, part in enumerate(message.content):
        where = f"{at}.content[{index}]"
        if isinstance(part, InputAudioPart):
            clips.append(base64_bytes(part.input_audio.data, f"{where}.input_audio.data"))
        elif isinstance(part, AudioUrlPart):
            clips.append(data_url_bytes(part.audio_url.url, f"{where}.audio_url.url"))
        else:
            texts.append(part.text)
    return "\n".join(texts), clips


def base64_bytes(data: str, param: str) -> bytes:
    try:
        decoded = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(param, "is not valid base64 (the standard alphabet)") from None
    if not decoded:
        raise Refusal(param, "holds no audio")
    return decoded


def data_url_bytes(url: str, param: str) -> bytes:
    """The bytes of a `data:audio/...;base64,` URL; any other URL is refused, as the service fetches nothing."""
    if not url.startswith("data:"):
        raise Refusal(param, "only data: URLs are accepted (the service fetches no remote audio); send the audio "
                          "as base64 in `input_audio` or in a `data:audio/wav;base64,...` URL")  # fmt: skip
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise Refusal(param, "a data: URL must be base64-encoded (`data:audio/wav;base64,...`)")
    return base64_bytes(data, param)


def response_schema(request: ChatCompletionRequest) -> str | None:
    """The JSON schema the answer is decoded under, if any."""
    chosen = request.response_format
    if isinstance(chosen, JsonObjectFormat):
        return ANY_OBJECT
    if isinstance(chosen, JsonSchemaFormat):
        try:
            return checked_schema(chosen.json_schema.json_schema)
        except SchemaRefused as refused:
            raise Refusal("response_format.json_schema.schema", str(refused)) from None
    return None


# ---- the answer ---------------------------------------------------------------------------------------------


def first_stop(text: str, stops: list[str]) -> int | None:
    """Where the first stop string written begins, if any."""
    found = [at for at in (text.find(stop) for stop in stops) if at >= 0]
    return min(found) if found else None


def finished(final: CritiqueOutcome, text: str, stops: list[str]) -> tuple[str, FinishReason]:
    """The answer's content (cut before a stop string) and why it ended."""
    cut = first_stop(text, stops)
    if cut is not None:
        return text[:cut], "stop"
    return text, "stop" if final.end_of_turn and not final.closed_early else "length"


def usage(answer: CritiqueResponse) -> Usage:
    return Usage(
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.tokens_generated,
        total_tokens=answer.prompt_tokens + answer.tokens_generated,
    )


def fingerprint(answer: CritiqueResponse) -> str:
    return f"{answer.model.profile}:{answer.model.model_id}"


async def completion(work: Work, chat: ChatInput) -> ChatCompletion | JSONResponse:
    """The unstreamed answer, or the error the native route would give."""
    work, finals = keeping_final(work)
    answer = await work.run()
    if not isinstance(answer, CritiqueResponse):
        assert isinstance(answer, JSONResponse)
        return answer
    content, reason = finished(finals[0], answer.text, chat.conversation.stop)
    return ChatCompletion(
        model=MUSIC_FLAMINGO.settings.checkpoint,
        choices=[Choice(message=AssistantMessage(content=content), finish_reason=reason)],
        usage=usage(answer),
        system_fingerprint=fingerprint(answer),
        seed=answer.seed,
    )


def data(body: BaseModel | dict) -> bytes:
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
    return f"data: {text}\n\n".encode()


async def completion_chunks(work: Work, chat: ChatInput) -> AsyncIterator[bytes]:
    """The answer as OpenAI streams it: a first chunk with the role, content chunks as the text is written, a last
    chunk with the finish reason, a usage chunk when asked, then `[DONE]`. Text that may begin a stop string is
    held back until it is known not to; once a stop string is written no more text is sent (the runner ends the
    row then). An error after the first chunk comes as a `data:` event with OpenAI's error object."""
    stops = chat.conversation.stop
    held_back = max((len(s) for s in stops), default=1) - 1
    chunk = ChatCompletionChunk(id=completion_id(), created=now(), model=MUSIC_FLAMINGO.settings.checkpoint, choices=[])

    def content(text: str | None = None, reason: FinishReason | None = None, role: bool = False) -> bytes:
        delta = Delta(role="assistant" if role else None, content=text)
        return data(chunk.model_copy(update={"choices": [ChunkChoice(delta=delta, finish_reason=reason)]}))

    yield content("", role=True)
    written = sent = ""
    async for piece in critique_pieces(work):
        if isinstance(piece, Written):
            written += piece.text
            cut = first_stop(written, stops)
            ready = written[:cut] if cut is not None else written[: max(len(written) - held_back, len(sent))]
            if len(ready) > len(sent):
                yield content(ready[len(sent) :])
                sent = ready
        elif isinstance(piece, Answered):
            text, reason = finished(piece.final, piece.answer.text, stops)
            if len(text) > len(sent):
                yield content(text[len(sent) :])
            yield content(reason=reason)
            if chat.request.stream_options is not None and chat.request.stream_options.include_usage:
                yield data(chunk.model_copy(update={"usage": usage(piece.answer)}))
        else:
            yield data(openai_error(piece.error.status, piece.error.model_dump(exclude={"status"}), CHAT_COMPLETIONS))
    yield DONE
