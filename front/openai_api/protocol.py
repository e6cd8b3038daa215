"""The OpenAI request and response bodies this service speaks, as pydantic models (the OpenAPI contract's too).

Fields OpenAI defines that change nothing here are accepted at their neutral values only (`n: 1`,
`frequency_penalty: 0`, `logprobs: false`, ...), so a client that sends its defaults works and one that asks for
more is told, by field, what is not supported. Unknown fields are refused as on the native routes.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from presets import Preset
from schemas import (
    MAX_CRITIQUE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MIN_TOP_P,
    AudioFormat,
    GenerateRequest,
    LongAudio,
    PublicRequest,
)

CHAT_COMPLETIONS = "/v1/chat/completions"
AUDIO_GENERATE = "/v1/audio/generate"
MODELS = "/v1/models"
MAX_MESSAGES = 64
MAX_STOP_SEQUENCES = 4  # as OpenAI
MAX_STOP_CHARS = 64
MAX_CHAT_TOKENS = 2048  # the native max_new_tokens limit
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")


def bounds(name: str) -> dict[str, Any]:
    """The range /generate gives field `name`: the compatible route's field takes the same one."""
    found: dict[str, Any] = {}
    for constraint in GenerateRequest.model_fields[name].metadata:
        found.update({key: getattr(constraint, key) for key in ("ge", "le", "gt", "lt") if hasattr(constraint, key)})
    return found


class OpenAIRequest(PublicRequest):
    """Strict like every public request (unknown fields refused), but a JSON number may be an integer where a float
    is asked for, as OpenAI's SDKs send them."""

    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)


# ---- /v1/chat/completions: the request -------------------------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_CRITIQUE_PROMPT_CHARS)


class InputAudio(BaseModel):
    data: str = Field(description="The file's bytes, base64-encoded (standard alphabet, padding optional).")
    format: Literal["wav", "mp3", "flac", "ogg"] = Field(description="The file's container: wav, mp3, flac or ogg.")


class InputAudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioUrl(BaseModel):
    url: str = Field(description="A `data:audio/...;base64,` URL. Remote URLs are refused (the service fetches none).")


class AudioUrlPart(BaseModel):
    type: Literal["audio_url"]
    audio_url: AudioUrl


ContentPart = Annotated[TextPart | InputAudioPart | AudioUrlPart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="`system`/`developer` text is put before the first user turn's text (the checkpoint keeps its "
        "own system prompt); `assistant` turns are earlier answers. Audio is accepted in user turns only."
    )
    content: str | list[ContentPart] = Field(description="Text, or a list of text and audio parts.")
    name: str | None = Field(None, max_length=64, description="Accepted and not used.")

    @field_validator("content")
    @classmethod
    def _text_within_limit(cls, content: str | list[Any]) -> str | list[Any]:
        if isinstance(content, str) and len(content) > MAX_CRITIQUE_PROMPT_CHARS:
            raise ValueError(f"at most {MAX_CRITIQUE_PROMPT_CHARS} characters of text per message")
        return content


class TextFormat(BaseModel):
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    name: str = Field(max_length=64, description="The schema's name (as OpenAI: letters, digits, _ and -).")
    json_schema: dict[str, Any] = Field(
        alias="schema", description="A JSON schema; its size and keywords are bounded (docs/openai.md)."
    )
    description: str | None = Field(None, max_length=1000)
    strict: bool | None = Field(None, description="Accepted; decoding always follows the schema exactly.")

    model_config = ConfigDict(populate_by_name=True)


class JsonSchemaFormat(BaseModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="Send a last chunk with `usage` (and no choices).")


def only(value: Any, neutral: Any, what: str) -> Any:
    if value is not None and value != neutral:
        raise ValueError(f"only {neutral!r} is supported ({what})")
    return value


class ChatCompletionRequest(OpenAIRequest):
    """POST /v1/chat/completions: a critique in OpenAI's chat format."""

    model: str = Field(
        max_length=200, description="The deployed checkpoint's id, or `music-flamingo` (GET /v1/models)."
    )
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=MAX_MESSAGES,
        description=f"1 to {MAX_MESSAGES} messages, the last one the user's. The first audio part is the "
        "performance, a second the reference; at most two in all.",
    )
    max_tokens: int | None = Field(None, ge=1, le=MAX_CHAT_TOKENS, description="Most tokens to write, 1 to 2048.")
    max_completion_tokens: int | None = Field(
        None, ge=1, le=MAX_CHAT_TOKENS, description="The same as max_tokens (give one, or both equal); default 512."
    )
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="0 to 2; absent or 0: greedy decoding (as /critique), above 0: sampling."
    )
    top_p: float | None = Field(None, ge=MIN_TOP_P, le=1.0, description=f"Nucleus mass, {MIN_TOP_P} to 1 (sampling).")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description=f"0 to {MAX_SEED}; drawn when absent.")
    stop: str | list[str] | None = Field(
        None,
        description=f"Up to {MAX_STOP_SEQUENCES} strings of 1 to {MAX_STOP_CHARS} characters; the answer ends "
        "before the first one written.",
    )
    n: int | None = Field(None, description="Choices to return: 1 only.")
    stream: bool | None = Field(None, description="Answer as Server-Sent Events of `chat.completion.chunk` objects.")
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = Field(
        None, description="`text` (default), `json_object`, or `json_schema` with your own schema."
    )
    # Accepted at their neutral values: what a client sends by default.
    user: str | None = Field(None, max_length=256, description="Accepted and not used.")
    metadata: dict[str, str] | None = Field(None, max_length=16, description="Accepted and not used.")
    store: bool | None = Field(None, description="false only: nothing is stored.")
    frequency_penalty: float | None = Field(None, description="0 only.")
    presence_penalty: float | None = Field(None, description="0 only.")
    logprobs: bool | None = Field(None, description="false only.")
    parallel_tool_calls: bool | None = Field(None, description="Accepted and not used (no tools).")
    tool_choice: Literal["none"] | None = Field(None, description="`none` only (no tools).")
    # This service's own knobs, as extra body fields.
    preset: Preset | None = Field(None, description="A prepared prompt, as on /critique; the user's text follows it.")
    long_audio: LongAudio = Field(
        LongAudio.TRUNCATE, description="`truncate` or `segments`, as on /critique (for a recording over 30 s)."
    )

    @field_validator("stop")
    @classmethod
    def _stop_bounded(cls, stop: str | list[str] | None) -> str | list[str] | None:
        sequences = [stop] if isinstance(stop, str) else stop or []
        if len(sequences) > MAX_STOP_SEQUENCES or any(not 1 <= len(s) <= MAX_STOP_CHARS for s in sequences):
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} strings of 1 to {MAX_STOP_CHARS} characters")
        return stop

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        return only(n, 1, "one choice per request")

    @field_validator("store", "logprobs")
    @classmethod
    def _off(cls, value: bool | None) -> bool | None:
        return only(value, False, "not available here")

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        return only(value, 0, "no penalties")

    @property
    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


# ---- /v1/chat/completions: the answer --------------------------------------------------------------------------


FinishReason = Literal["stop", "length"]


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Prompt tokens of every row the answer took (audio included).")
    completion_tokens: int = Field(description="Tokens written (with segments: every segment's and the summary's).")
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = Field(None, description="The profile and checkpoint that answered.")
    seed: int = Field(description="The seed used (drawn when the request gave none): send it again to reproduce.")


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


# ---- /v1/models ------------------------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str = Field(description="The checkpoint this id serves.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- /v1/audio/generate ----------------------------------------------------------------------------------------

UNSUPPORTED_AUDIO_FORMATS = ("pcm", "aac")


class AudioGenerateRequest(OpenAIRequest):
    """POST /v1/audio/generate: vLLM-Omni's text-to-audio route, answered by AudioLDM2 (docs/openai.md)."""

    input: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What the audio should sound like.")
    model: str | None = Field(
        None, max_length=200, description="A generation family or checkpoint id; default audioldm2."
    )
    response_format: str = Field("wav", description="`wav`, `flac`, `mp3` or `opus` (`pcm` and `aac` are not offered).")
    speed: float = Field(1.0, description="1 only: the clip is made at its length, not played faster.")
    audio_length: float | None = Field(
        None, **bounds("duration"), description="Seconds of audio; default 10 (the model's native length)."
    )
    audio_start: float = Field(0.0, description="0 only: the clip starts at its beginning.")
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="What to steer away from.")
    guidance_scale: float | None = Field(None, **bounds("guidance_scale"), description="Classifier-free guidance.")
    num_inference_steps: int | None = Field(None, **bounds("steps"), description="Denoising steps; default 25.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="The same seed gives the same bytes as /generate.")

    @field_validator("response_format")
    @classmethod
    def _offered_format(cls, value: str) -> str:
        offered = [f.value for f in AudioFormat]
        if value not in offered:
            raise ValueError(f"choose one of {', '.join(offered)}")
        return value

    @field_validator("speed")
    @classmethod
    def _at_speed(cls, value: float) -> float:
        return only(value, 1.0, "the clip is made at its own speed")

    @field_validator("audio_start")
    @classmethod
    def _from_start(cls, value: float) -> float:
        return only(value, 0.0, "a clip starts at 0")
