"""Request and response models: the public API and the front -> runner contract.

Every public knob has a description, a default and bounds here, so the OpenAPI
schema at /docs.json is the reference a client needs.
"""

from __future__ import annotations

import enum
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PROMPT_CHARS = 1000
MAX_SEED = 2**53 - 1  # exact in every JSON client, JavaScript included


class Scheduler(str, enum.Enum):
    DPMPP = "dpmpp"  # DPM-Solver++ multistep: good audio in ~25 steps
    DDIM = "ddim"  # the checkpoints' own scheduler: needs ~200 steps


class AudioFormat(str, enum.Enum):
    WAV = "wav"
    FLAC = "flac"


class GenerationParams(BaseModel):
    """What shapes one text-to-audio generation (shared by the public request and the runner job)."""

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
    duration: float = Field(10.0, ge=1.0, le=30.0, description="Length of the audio in seconds, 1 to 30.")
    steps: int = Field(25, ge=1, le=500, description="Denoising steps, 1 to 500. 25 suits dpmpp, 200 suits ddim.")
    scheduler: Scheduler = Field(Scheduler.DPMPP, description="Sampler: `dpmpp` (DPM-Solver++) or `ddim`.")
    guidance_scale: float = Field(
        3.5,
        ge=0.0,
        le=20.0,
        description="Classifier-free guidance, 0 to 20. Higher follows the prompt more closely; <= 1 turns it off.",
    )
    num_waveforms: int = Field(
        1,
        ge=1,
        le=4,
        description="Candidates to generate, 1 to 4. With more than one they are ranked best first by CLAP score.",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain text, not only whitespace")
        return value


class GenerateRequest(GenerationParams):
    """POST /generate and /generate/json."""

    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description=f"Random seed, 0 to {MAX_SEED}. Absent: one is drawn and returned. "
        "Waveform k uses seed + k, so any candidate can be regenerated alone.",
    )
    format: AudioFormat = Field(AudioFormat.WAV, description="Audio container: `wav` or `flac` (16-bit PCM, mono).")


class GenerationJob(GenerationParams):
    """One generation as the AudioLDM2 runner receives it: the seed is always fixed by the front."""

    seed: int = Field(ge=0, le=MAX_SEED)


class RunnerWaveform(BaseModel):
    """Raw samples between runner and front: bytes cross BentoML's pickle transport as they are."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    samples_f32le: bytes = Field(description="Mono float32 little-endian samples at the runner's sample rate.")
    seed: int
    clap_score: float | None = None

    @classmethod
    def from_array(cls, samples: np.ndarray, seed: int, clap_score: float | None) -> RunnerWaveform:
        return cls(samples_f32le=np.asarray(samples, dtype="<f4").tobytes(), seed=seed, clap_score=clap_score)

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(self.samples_f32le, dtype="<f4")


class JobError(BaseModel):
    """Why one job of a batch failed; the other jobs of the batch are unaffected."""

    kind: Literal["non_finite", "out_of_memory", "internal"]
    message: str


class Provenance(BaseModel):
    model_id: str = Field(description="Checkpoint that produced the audio.")
    profile: Literal["full", "tiny"] = Field(description="`tiny` means random weights: not real audio.")
    scheduler: Scheduler | None = None
    steps: int | None = None


class RunnerTimings(BaseModel):
    batch_size: int = Field(description="Jobs in the runner batch this request was served in.")
    group_size: int = Field(description="Jobs of that batch that ran through the model together with this one.")
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


class Timings(RunnerTimings):
    total_s: float = Field(description="Seconds from request arrival at the front to response.")


class GenerateResponse(BaseModel):
    """POST /generate/json."""

    format: AudioFormat
    sample_rate: int
    duration: float = Field(description="Seconds of audio in each waveform.")
    waveforms: list[GeneratedWaveform] = Field(description="Best first when ranked.")
    provenance: Provenance
    timings: Timings
