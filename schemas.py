"""Request and response models: the public API and the front -> runner contract.

Every public knob has a description, a default and bounds here, so the OpenAPI
schema at /docs.json is the reference a client needs.
"""

from __future__ import annotations

import enum
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from critique_format import StructuredCritique
from presets import Preset
from registry import AUDIOLDM2, GENERATORS
from settings import SETTINGS
from telemetry import Received

MAX_PROMPT_CHARS = 1000
MAX_SEED = 2**53 - 1  # exact in every JSON client, JavaScript included


def samples_to_bytes(samples: np.ndarray) -> bytes:
    """Audio between services travels as float32 little-endian bytes (raw in BentoML's pickle transport)."""
    return np.asarray(samples, dtype="<f4").tobytes()


def samples_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


MAX_UNKNOWN_FIELDS_NAMED = 5


class PublicRequest(BaseModel):
    """What every public request shares. A JSON body's values are taken as the types they are sent as: `"5"` or
    `true` is no duration and `5.0` no step count (pydantic's strict mode); NaN and Infinity, which pydantic's JSON
    parser reads, are no finite number. Form fields arrive as text and are parsed into their types:
    compat/bentoml_multipart.py validates forms with `strict=False`."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _few_unknown_fields(cls, data: Any) -> Any:
        """A body of many unknown keys is refused before anything else is checked, naming only the first few:
        one error per key made an 80,000-key body a 10 MB answer and seconds of the front's event loop."""
        if not isinstance(data, dict):
            return data
        unknown = [key for key in data if key not in cls.model_fields]
        if len(unknown) <= MAX_UNKNOWN_FIELDS_NAMED:
            return data  # each named in full validation, with the other fields' errors
        named = unknown[:MAX_UNKNOWN_FIELDS_NAMED]
        more = PydanticCustomError(
            "extra_forbidden", "and {more} more unknown field(s), not named", {"more": len(unknown) - len(named)}
        )
        errors = [InitErrorDetails(type="extra_forbidden", loc=(key,), input=data[key]) for key in named]
        raise ValidationError.from_exception_data(cls.__name__, [*errors, InitErrorDetails(type=more, input=None)])


class Scheduler(str, enum.Enum):
    DPMPP = "dpmpp"  # DPM-Solver++ multistep: good audio in ~25 steps
    DDIM = "ddim"  # the checkpoints' own scheduler: needs ~200 steps


class AudioFormat(str, enum.Enum):
    WAV = "wav"  # 16-bit PCM
    FLAC = "flac"  # 16-bit PCM, lossless
    MP3 = "mp3"  # MPEG-1/2 Layer III (LAME, variable bitrate)
    OPUS = "opus"  # Opus in an Ogg container

    @property
    def media_type(self) -> str:
        """The Content-Type of a file in this format (an Opus file is an Ogg stream)."""
        return MEDIA_TYPES[self]


MEDIA_TYPES = {
    AudioFormat.WAV: "audio/wav",
    AudioFormat.FLAC: "audio/flac",
    AudioFormat.MP3: "audio/mpeg",
    AudioFormat.OPUS: "audio/ogg",
}
# `compression` when a request leaves it out: flac's is libFLAC's default level 5; mp3's is LAME's default,
# VBR -V 4 (~31 kbps on 16 kHz mono); opus's is a 31 kbps target, near transparent for 16 kHz mono speech and music.
DEFAULT_COMPRESSION = {AudioFormat.FLAC: 0.625, AudioFormat.MP3: 0.4, AudioFormat.OPUS: 0.9}


class DiffusionParams(BaseModel):
    """Knobs shared by every AudioLDM2 request: the text conditioning and the sampler."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description=f"What the audio should sound like. 1 to {MAX_PROMPT_CHARS} characters, not only whitespace.",
        examples=["Techno music with a strong, upbeat tempo and high melodic riffs"],
    )
    negative_prompt: str = Field(
        "Low quality.",
        max_length=MAX_PROMPT_CHARS,
        description=f"What to steer away from (used when guidance_scale > 1). Up to {MAX_PROMPT_CHARS} characters.",
    )
    steps: int = Field(25, ge=1, le=500, description="Denoising steps, 1 to 500. 25 suits dpmpp, 200 suits ddim.")
    scheduler: Scheduler = Field(Scheduler.DPMPP, description="Sampler: `dpmpp` (DPM-Solver++) or `ddim`.")
    guidance_scale: float = Field(
        3.5,
        ge=0.0,
        le=20.0,
        description="Classifier-free guidance, 0 to 20. Higher follows the prompt more closely; <= 1 turns it off.",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain text, not only whitespace")
        return value


# Long-form cap (generate and transform): AUDIO_STUDIO_MAX_AUDIO_SECONDS, 600 by default.
MAX_AUDIO_SECONDS = float(SETTINGS.max_audio_seconds)


class GenerationParams(DiffusionParams):
    """What shapes one text-to-audio generation (shared by the public request and the runner job)."""

    duration: float = Field(
        10.0,
        ge=1.0,
        le=MAX_AUDIO_SECONDS,
        description=f"Length of the audio in seconds, 1 to {MAX_AUDIO_SECONDS:g}. Up to 30 s the clip is one "
        "latent; longer clips are denoised as overlapping windows of the model's native ~10 s (MultiDiffusion).",
    )
    num_waveforms: int = Field(
        1,
        ge=1,
        le=4,
        description="Candidates to generate, 1 to 4. With more than one they are ranked best first by CLAP score.",
    )


AUDIOLDM2_SAMPLE_RATE = 16_000  # what the front resamples uploads to, and what the runner returns
MIN_TRANSFORM_SECONDS = 1.0
MAX_TRANSFORM_SECONDS = MAX_AUDIO_SECONDS


class TransformParams(DiffusionParams):
    """What shapes one audio-to-audio re-synthesis."""

    strength: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="How far to move from the input, 0 to 1: 0 returns the input through the model's "
        "autoencoder and vocoder, ~0.3 keeps most of the sound, ~0.8 keeps little more than the rhythm, "
        "1 ignores the input (plain text-to-audio of the same length).",
    )


class DeliveryParams(BaseModel):
    """Seed and file format of a public audio request."""

    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description=f"Random seed, 0 to {MAX_SEED}. Absent: one is drawn and returned. "
        "Waveform k uses seed + k, so any candidate can be regenerated alone.",
    )
    format: AudioFormat = Field(
        AudioFormat.WAV,
        description="Audio file format, mono: `wav` or `flac` (16-bit PCM), `mp3` (`audio/mpeg`) or `opus` (Ogg Opus, "
        "`audio/ogg`).",
    )
    compression: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="0 (best quality, largest file) to 1 (smallest file); libsndfile's compression level. `mp3`: LAME "
        "variable-bitrate quality -V 0 to -V 9.99 (compression x 10). `opus`: a target bitrate of 256 kbps at 0 "
        "down to 6 kbps at 1, linear. `flac`: libFLAC level 0 to 8 (lossless: only size and encoding time change). "
        "Absent: "
        + ", ".join(f"{fmt.value} {level:g}" for fmt, level in DEFAULT_COMPRESSION.items())
        + ". Not accepted with `wav`.",
    )

    @field_validator("compression")
    @classmethod
    def _compressed_format(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("format") is AudioFormat.WAV:
            raise ValueError("wav is uncompressed: leave compression out, or choose flac, mp3 or opus")
        return value


# The families that make audio (registry.py); GET /models says which of them this deployment runs.
GenerationModel = enum.Enum(  # type: ignore[misc]
    "GenerationModel", {family.name.upper(): family.name for family in GENERATORS}, type=str, module=__name__
)


def model_field() -> Any:
    return Field(
        GenerationModel(AUDIOLDM2.name),
        description="Which model family makes the audio: "
        + ", ".join(f"`{family.name}` ({family.title})" for family in GENERATORS)
        + ". GET /models lists the families this deployment runs, with their limits and features.",
    )


class RankBy(str, enum.Enum):
    CLAP = "clap"  # text-audio embedding similarity, computed on the AudioLDM2 runner
    CRITIC = "critic"  # Music Flamingo listens to each candidate and scores it (needs its runner)


class GenerateRequest(DeliveryParams, GenerationParams, PublicRequest):
    """POST /generate and /generate/json (fields in that order: `seed` is checked after `num_waveforms`)."""

    rank_by: RankBy = Field(
        RankBy.CLAP,
        description="How candidates are ordered: `clap` (similarity of text and audio embeddings) or `critic` "
        "(Music Flamingo listens to each candidate and scores, 1 to 10, how well it matches the prompt and how clean "
        "it is; costs one critique row per candidate, and answers 503 when the Music Flamingo runner is down).",
    )
    model: GenerationModel = model_field()

    @field_validator("seed")
    @classmethod
    def _every_waveform_seed_in_range(cls, seed: int | None, info: ValidationInfo) -> int | None:
        """Waveform k uses seed + k, and every seed returned must be one the API accepts: refused, never wrapped."""
        waveforms = info.data.get("num_waveforms", 1)
        if seed is not None and seed + waveforms - 1 > MAX_SEED:
            raise ValueError(
                f"with num_waveforms={waveforms} the seed must be at most {MAX_SEED - waveforms + 1} "
                f"(waveform k uses seed + k, and seeds stop at {MAX_SEED})"
            )
        return seed


class TransformRequest(DeliveryParams, TransformParams, PublicRequest):
    """POST /transform and /transform/json (multipart/form-data)."""

    audio: Path = Field(
        description=f"The clip to re-synthesise: WAV, FLAC, MP3 or OGG, {MIN_TRANSFORM_SECONDS:g} to "
        f"{MAX_TRANSFORM_SECONDS:g} s, any sample rate and channel count (down-mixed to mono, resampled to 16 kHz)."
    )
    model: GenerationModel = model_field()


class EditMode(str, enum.Enum):
    INPAINT = "inpaint"  # regenerate start_s..end_s, keep the rest
    EXTEND = "extend"  # add `seconds` of audio at `side`


class ExtendSide(str, enum.Enum):
    START = "start"
    END = "end"


MAX_BLEND_SECONDS = 2.0
MAX_REPAINT_JUMPS = 4
MIN_EXTEND_SECONDS = 0.1


class EditSpan(BaseModel):
    """Where the audio was edited, in the output's time."""

    start_s: float = Field(description="Start of the regenerated range, seconds into the output.")
    end_s: float = Field(description="End of the regenerated range, seconds into the output.")
    duration: float = Field(description="Length of the output in seconds.")

    def total_samples(self, sample_rate: int) -> int:
        return round(self.duration * sample_rate)


# Each mode's own fields: refused with the other mode (where they would mean nothing), required with theirs unless
# they have a default there (side: end).
MODE_OF_FIELD = {
    "start_s": EditMode.INPAINT,
    "end_s": EditMode.INPAINT,
    "seconds": EditMode.EXTEND,
    "side": EditMode.EXTEND,
}
DEFAULTED_IN_MODE = frozenset({"side"})


class EditParams(DiffusionParams):
    """What shapes one edit of a clip (shared by the public request and the runner job)."""

    mode: EditMode = Field(
        description="`inpaint`: regenerate the range start_s..end_s under the prompt and keep the rest. `extend`: add "
        "`seconds` of audio continuing the clip at `side`."
    )
    start_s: float | None = Field(
        None,
        ge=0.0,
        le=MAX_AUDIO_SECONDS,
        validate_default=True,
        description="inpaint: where the range starts, seconds into the clip (0 to its length).",
    )
    end_s: float | None = Field(
        None,
        ge=0.0,
        le=MAX_AUDIO_SECONDS,
        validate_default=True,
        description="inpaint: where the range ends, seconds into the clip, after start_s and at most the clip's "
        "length. A range over the whole clip is a transform (POST /transform, strength 1).",
    )
    seconds: float | None = Field(
        None,
        ge=MIN_EXTEND_SECONDS,
        le=MAX_AUDIO_SECONDS,
        validate_default=True,
        description=f"extend: seconds of audio to add, {MIN_EXTEND_SECONDS:g} up to what brings the output to "
        f"{MAX_AUDIO_SECONDS:g} s.",
    )
    side: ExtendSide | None = Field(
        None, validate_default=True, description="extend: `end` (the default) or `start` of the clip."
    )
    blend_s: float = Field(
        0.25,
        ge=0.0,
        le=MAX_BLEND_SECONDS,
        description=f"Seconds, 0 to {MAX_BLEND_SECONDS:g}, over which each boundary of the range crossfades from the "
        "kept audio into the new, so the seams cannot be heard. The ramps lie in the kept audio: the range itself is "
        "regenerated whole.",
    )
    repaint_jumps: int = Field(
        0,
        ge=0,
        le=MAX_REPAINT_JUMPS,
        description=f"RePaint's resampling, 0 to {MAX_REPAINT_JUMPS}: each denoising step but the last runs 1 + "
        "repaint_jumps times, noised back in between, so the new audio agrees better with the kept audio at the "
        "seams. Costs that many times the steps.",
    )
    num_waveforms: int = Field(
        1,
        ge=1,
        le=4,
        description="Candidates to generate, 1 to 4. With more than one they are ranked best first by CLAP score.",
    )

    @field_validator(*MODE_OF_FIELD)
    @classmethod
    def _field_of_the_mode(cls, value: Any, info: ValidationInfo) -> Any:
        name, chosen = info.field_name, info.data.get("mode")
        assert name is not None
        mode = MODE_OF_FIELD[name]
        if chosen is None:  # the mode itself was refused
            return value
        if chosen is mode and value is None and name not in DEFAULTED_IN_MODE:
            raise ValueError(f"{name} is required with mode={mode.value}")
        if chosen is not mode and value is not None:
            raise ValueError(f"{name} is for mode={mode.value}, not mode={chosen.value}")
        return value

    @field_validator("end_s")
    @classmethod
    def _range_not_empty(cls, value: float | None, info: ValidationInfo) -> float | None:
        start = info.data.get("start_s")
        if value is not None and start is not None and value <= start:
            raise ValueError(f"end_s must be after start_s ({start:g} s): the range is empty")
        return value

    def problem(self, clip_samples: int, sample_rate: int) -> tuple[str, str] | None:
        """What the clip's length makes wrong with this edit: (field, message), or None."""
        clip_s = clip_samples / sample_rate
        if self.mode is EditMode.INPAINT:
            assert self.start_s is not None and self.end_s is not None
            if self.end_s > clip_s:
                return "end_s", f"end_s must be at most the clip's length, {clip_s:.3f} s"
            if self.start_s <= 0.0 and self.end_s >= clip_s:
                return "end_s", "the range covers the whole clip: regenerate it with POST /transform (strength 1)"
            return None
        assert self.seconds is not None
        if clip_s + self.seconds > MAX_AUDIO_SECONDS:
            return "seconds", f"the clip ({clip_s:.3f} s) and seconds together must be at most {MAX_AUDIO_SECONDS:g} s"
        return None

    def span(self, clip_samples: int, sample_rate: int) -> EditSpan:
        """The regenerated range and the output's length, in the output's time."""
        clip_s = clip_samples / sample_rate
        if self.mode is EditMode.INPAINT:
            assert self.start_s is not None and self.end_s is not None
            return EditSpan(start_s=self.start_s, end_s=self.end_s, duration=clip_s)
        assert self.seconds is not None
        added = round(self.seconds * sample_rate)
        duration = (clip_samples + added) / sample_rate
        if self.side is ExtendSide.START:
            return EditSpan(start_s=0.0, end_s=added / sample_rate, duration=duration)
        return EditSpan(start_s=clip_s, end_s=duration, duration=duration)


class EditRequest(DeliveryParams, EditParams, PublicRequest):
    """POST /edit and /edit/json (multipart/form-data): AudioLDM2 only."""

    audio: Path = Field(
        description=f"The clip to edit: WAV, FLAC, MP3 or OGG, {MIN_TRANSFORM_SECONDS:g} to "
        f"{MAX_TRANSFORM_SECONDS:g} s, any sample rate and channel count (down-mixed to mono, resampled to 16 kHz). "
        "The output keeps its sample rate (16 kHz) and its length, plus `seconds` with `extend`."
    )


class WebhookParams(BaseModel):
    """What a job submission adds to its route's request: where to send the job's events (docs/webhooks.md)."""

    webhook: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="An http(s) URL to POST the job's status to on each of `webhook_events`, signed with Standard "
        "Webhooks headers. Its host must be among the server's AUDIO_STUDIO_WEBHOOK_ALLOWED_HOSTS (webhooks are off "
        "without them); loopback, link-local and private addresses only when listed by themselves. Redirects are not "
        "followed.",
    )
    webhook_events: list[Literal["start", "progress", "completed"]] = Field(
        ["completed"],
        min_length=1,
        max_length=3,
        description="Which events are sent: `start` (the job runs), `progress` (at most once every 2 s while it "
        "runs), `completed` (succeeded, failed or cancelled). In a form: one field, comma-separated.",
    )

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _comma_separated(cls, events: Any) -> Any:
        """A form sends each field once: its events come as one comma-separated value."""
        return [event.strip() for event in events.split(",")] if isinstance(events, str) else events


WEBHOOK_FIELDS = frozenset(WebhookParams.model_fields)


class GenerateJobRequest(WebhookParams, GenerateRequest):
    """POST /jobs/generate and /jobs/generate/json: /generate's request, and a webhook."""


class TransformJobRequest(WebhookParams, TransformRequest):
    """POST /jobs/transform and /jobs/transform/json (multipart/form-data): /transform's request, and a webhook."""


class EditJobRequest(WebhookParams, EditRequest):
    """POST /jobs/edit and /jobs/edit/json (multipart/form-data): /edit's request, and a webhook."""


def new_job_id() -> str:
    return uuid.uuid4().hex


class RunnerJob(BaseModel):
    """What every job sent to a runner carries: an id the front can cancel it by."""

    job_id: str = Field(default_factory=new_job_id, max_length=64)
    # Noted when the runner parses the job, inside its request: the batch that serves it runs elsewhere.
    _received: Received = PrivateAttr(default_factory=Received)

    @property
    def received(self) -> Received:
        return self._received


class GenerationJob(GenerationParams, RunnerJob):
    """One generation as the AudioLDM2 runner receives it: the seed is always fixed by the front."""

    seed: int = Field(ge=0, le=MAX_SEED)


class ClipJob(RunnerJob):
    """A runner job on an uploaded clip: its decoded 16 kHz mono samples and a fixed seed."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    seed: int = Field(ge=0, le=MAX_SEED)
    samples_f32le: bytes = Field(description="Input clip: mono float32 little-endian samples at 16 kHz.")

    @property
    def samples(self) -> np.ndarray:
        return samples_from_bytes(self.samples_f32le)


class TransformJob(TransformParams, ClipJob):
    """One transform as the AudioLDM2 runner receives it."""


class EditJob(EditParams, ClipJob):
    """One edit as the AudioLDM2 runner receives it."""


class RunnerWaveform(BaseModel):
    """Raw samples between runner and front: bytes cross BentoML's pickle transport as they are."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    samples_f32le: bytes = Field(description="Mono float32 little-endian samples at the runner's sample rate.")
    seed: int
    clap_score: float | None = None
    critic_score: int | None = None  # set by the front with rank_by=critic (front/studio.py)
    critic_reason: str | None = None

    @classmethod
    def from_array(cls, samples: np.ndarray, seed: int, clap_score: float | None) -> RunnerWaveform:
        return cls(samples_f32le=samples_to_bytes(samples), seed=seed, clap_score=clap_score)

    @property
    def samples(self) -> np.ndarray:
        return samples_from_bytes(self.samples_f32le)


class JobError(BaseModel):
    """Why one job of a batch failed; the other jobs of the batch are unaffected."""

    kind: Literal["invalid_input", "non_finite", "out_of_memory", "internal", "cancelled"]
    message: str
    field: str | None = Field(None, description="The request field at fault, for `invalid_input`.")


class Provenance(BaseModel):
    model_id: str = Field(description="Checkpoint that produced the audio.")
    profile: Literal["full", "tiny", "random"] = Field(
        description="`tiny` and `random` mean random weights: not real audio."
    )
    scheduler: Scheduler | None = None
    steps: int | None = None


class RunnerTimings(BaseModel):
    batch_size: int = Field(description="Jobs in the batch the runner's adaptive batcher took this request in with.")
    group_size: int = Field(
        description="Most jobs that shared one model pass with this one (AudioLDM2: a UNet pass, where jobs join at "
        "step boundaries; Music Flamingo: a generate call)."
    )
    inference_s: float = Field(description="Seconds the model spent on this request's group.")


class GenerationOutcome(BaseModel):
    """The runner's answer for one job: waveforms, or the error that stopped this job alone."""

    waveforms: list[RunnerWaveform] = []
    error: JobError | None = None
    sample_rate: int
    provenance: Provenance
    timings: RunnerTimings | None = None


class GeneratedWaveform(BaseModel):
    audio_base64: str = Field(description="The audio file (in the requested format), base64-encoded.")
    seed: int = Field(description="Seed that regenerates exactly this waveform with num_waveforms=1.")
    clap_score: float | None = Field(None, description="CLAP text-audio similarity; present when ranked.")
    critic_score: int | None = Field(None, description="Music Flamingo's 1-10 score, with `rank_by: critic`.")
    critic_reason: str | None = Field(None, description="Music Flamingo's reason for its score.")


class Timings(RunnerTimings):
    total_s: float = Field(description="Seconds from request arrival at the front to response.")


class GenerateResponse(BaseModel):
    """POST /generate/json, /transform/json and /edit/json."""

    format: AudioFormat
    sample_rate: int
    duration: float = Field(description="Seconds of audio in each waveform.")
    waveforms: list[GeneratedWaveform] = Field(description="Best first when ranked.")
    provenance: Provenance
    timings: Timings
    edited: EditSpan | None = Field(None, description="/edit: the regenerated range and the output's length.")


# ---- critique (Music Flamingo) -------------------------------------------------

MUSIC_FLAMINGO_SAMPLE_RATE = 16_000
MAX_CRITIQUE_PROMPT_CHARS = 20_000
MAX_TOTAL_AUDIO_SECONDS = 20 * 60
MAX_PROMPT_TOKENS = 24_000
# Dividing logits by a temperature near 0 overflows them to inf (and softmax to NaN); below 0.01 sampling is
# indistinguishable from greedy decoding anyway. top_p keeps at least one token at any value; the floor is for clarity.
MIN_TEMPERATURE = 0.01
MIN_TOP_P = 0.01


class GenerationSettings(BaseModel):
    """Text generation knobs of one critique."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(512, ge=1, le=2048, description="Most tokens to write, 1 to 2048.")
    do_sample: bool = Field(False, description="Sample (with temperature and top_p) instead of greedy decoding.")
    temperature: float = Field(
        0.7,
        ge=MIN_TEMPERATURE,
        le=2.0,
        description=f"Sampling temperature, {MIN_TEMPERATURE} to 2 (sampling only). Lower is closer to greedy.",
    )
    top_p: float = Field(
        0.9, ge=MIN_TOP_P, le=1.0, description=f"Nucleus sampling mass, {MIN_TOP_P} to 1 (sampling only)."
    )


class CritiqueParams(GenerationSettings):
    prompt: str | None = Field(
        None,
        max_length=MAX_CRITIQUE_PROMPT_CHARS,
        description=f"Your question or instruction, up to {MAX_CRITIQUE_PROMPT_CHARS} characters. With a preset it is "
        "added after the preset's prompt; alone it replaces it.",
    )
    preset: Preset | None = Field(
        None,
        description="A prepared prompt: `describe`, `caption`, `key`, `tempo`, `feedback` (teaching feedback) or "
        "`compare` (needs `reference`). All need `audio`.",
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description=f"Sampling seed, 0 to {MAX_SEED}; drawn and returned when absent."
    )


class CritiqueOutputFormat(str, enum.Enum):
    TEXT = "text"
    JSON = "json"


class LongAudio(str, enum.Enum):
    TRUNCATE = "truncate"  # hear the first per-clip-limit seconds only
    SEGMENTS = "segments"  # hear everything: overlapping segments, critiqued together, then summarised


class CritiqueRequest(CritiqueParams, PublicRequest):
    """POST /critique (multipart/form-data).

    Each upload is a list of at most one file: BentoML 1.4.39 cannot build an input spec for an optional
    file (`Path | None` is not turned into a file, `Optional[Path]` fails to hash its file schema).
    """

    audio: list[Path] = Field(
        [],
        max_length=1,
        description="The recording to listen to (zero or one file): WAV, FLAC, MP3 or OGG, any rate and channels. "
        "Longer than the model's per-clip limit is cut to it (the response says so).",
    )
    reference: list[Path] = Field(
        [],
        max_length=1,
        description="A reference recording to compare `audio` against (zero or one file, same formats).",
    )
    output: CritiqueOutputFormat = Field(
        CritiqueOutputFormat.TEXT,
        description="`text` (an answer in prose) or `json`: `structured` follows the StructuredCritique schema, "
        "guaranteed by decoding under its grammar (it always parses and validates; with a short max_new_tokens the "
        "object is closed early with empty values and `closed_early` says so).",
    )
    long_audio: LongAudio = Field(
        LongAudio.TRUNCATE,
        description="A recording longer than the model's per-clip limit: `truncate` hears its beginning only; "
        "`segments` critiques overlapping segments of it together and summarises them in one more pass "
        "(the response lists the segments).",
    )
    stream: bool = Field(
        False,
        description="Answer `text/event-stream` (also with `Accept: text/event-stream`): `delta` events "
        '(`{"text": ..., "tokens": ...}`, the text written since the last one) while the answer is decoded, then '
        "one `result` event holding what `stream: false` answers (or an `error` event: the error body with its "
        "`status`). The deltas together are the answer's `text` (with `output: json`, the JSON as decoded; "
        "`structured` carries it validated). /critique only: a job's events carry its text so far.",
    )

    @property
    def uploads(self) -> list[tuple[Literal["audio", "reference"], Path]]:
        """The uploaded clips in model order: performance first, then reference."""
        return [("audio", path) for path in self.audio] + [("reference", path) for path in self.reference]


class CritiqueJobRequest(WebhookParams, CritiqueRequest):
    """POST /jobs/critique (multipart/form-data): /critique's request, and a webhook."""


class ChatTurn(BaseModel):
    """One turn of a conversation sent to the Music Flamingo runner (the OpenAI-compatible route's messages)."""

    role: Literal["user", "assistant"]
    text: str
    clips: int = Field(0, ge=0, description="How many of the job's clips, in order, this turn carries.")


class CritiqueJob(GenerationSettings, RunnerJob):
    """One critique as the Music Flamingo runner receives it."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    prompt: str | None = Field(description="The user turn's text (preset and prompt composed), or None.")
    clips_f32le: list[bytes] = Field(description="0 to 2 clips, mono float32 little-endian at 16 kHz, in order.")
    seed: int = Field(ge=0, le=MAX_SEED)
    json_schema: str | None = Field(None, description="Decode under this JSON schema's grammar; None: free text.")
    turns: list[ChatTurn] = Field([], description="A conversation, the last turn the user's; empty: one user turn.")
    stop: list[str] = Field([], description="End the row once its text holds one of these.")

    @property
    def clips(self) -> list[np.ndarray]:
        return [samples_from_bytes(clip) for clip in self.clips_f32le]


ProgressPhase = Literal["queued", "encoding", "denoising", "decoding", "ranking", "prefill", "finished"]
ProgressUnit = Literal["steps", "tokens", "pieces"]


class RunnerProgress(BaseModel):
    """Where one job is on its runner: the phase, steps (denoising), tokens (decoding) or pieces (encoding) done of
    total, and how much of the job that is, which only the runner can tell from its own phases
    (runners/progress.py)."""

    job_id: str
    phase: ProgressPhase
    unit: ProgressUnit | None = None  # what `done` and `total` count
    done: int = 0
    total: int = 0
    fraction: float = Field(0.0, ge=0.0, le=1.0)  # of this runner job, never decreasing while it runs
    text: str | None = None  # a decoding critique's text so far: a prefix of its final text (runners/music_flamingo.py)


class RunnerLimits(BaseModel):
    """What the loaded checkpoint accepts; the front asks once and checks uploads against it."""

    max_clip_seconds: float
    min_clip_seconds: float
    sample_rate: int


class CritiqueOutcome(BaseModel):
    text: str | None = None
    closed_early: bool = False  # structured output: the token budget ran short and the JSON was closed early
    end_of_turn: bool = False  # the row ended with its end-of-turn token (else: its budget, a stop string or a cancel)
    tokens_generated: int = 0
    prompt_tokens: int = 0
    error: JobError | None = None
    provenance: Provenance
    timings: RunnerTimings | None = None


class ClipUsage(BaseModel):
    field: Literal["audio", "reference"]
    seconds: float = Field(description="Seconds of this clip the model heard.")
    source_seconds: float = Field(description="Length of the uploaded file.")
    truncated: bool = Field(description="True when the clip was cut to the model's per-clip limit.")


class Segment(BaseModel):
    """One part of a long recording, critiqued as its own row (`long_audio: segments`)."""

    start_s: float
    end_s: float
    text: str = Field(description="The segment's own critique (JSON text with `output: json`).")


class CritiqueResponse(BaseModel):
    """POST /critique."""

    text: str = Field(description="The answer; with `output: json`, the structured critique as JSON text.")
    structured: StructuredCritique | None = Field(None, description="With `output: json`: the critique as data.")
    closed_early: bool = Field(
        False, description="`output: json` only: max_new_tokens ran short and the object was closed with empty values."
    )
    long_audio: LongAudio = Field(description="The long-audio policy that ran.")
    segments: list[Segment] = Field(
        [], description="With `long_audio: segments` and a recording longer than one segment: each segment's critique."
    )
    preset: Preset | None
    model: Provenance
    audio_seconds: list[ClipUsage] = Field(description="One entry per uploaded clip, in order.")
    truncated: bool = Field(description="True when any clip was cut to the model's per-clip limit.")
    tokens_generated: int
    prompt_tokens: int = Field(description="Prompt tokens of every row the answer took, its audio's included.")
    seed: int
    timings: Timings


class ModelFamily(BaseModel):
    """One model family this deployment runs (GET /models)."""

    name: str = Field(description="The value of `model` that chooses it (generate, transform).")
    title: str
    checkpoint: str = Field(description="The published checkpoint this deployment serves.")
    checkpoints: list[str] = Field(description="The published checkpoints the family can serve.")
    profile: Literal["full", "tiny", "random"] = Field(
        description="`tiny` and `random` mean random weights: not real audio."
    )
    features: list[str] = Field(description="generate, transform, long_form (over 30 s), clap_ranking, critique.")
    max_seconds: float | None = Field(
        description="The longest clip it makes or takes, in seconds; null where the checkpoint decides (Music "
        "Flamingo hears up to 600 or 1200 s per clip, see /critique)."
    )
    sample_rate: int
    default: bool = Field(description="Chosen when a request names no `model`.")


class ModelsResponse(BaseModel):
    models: list[ModelFamily]
