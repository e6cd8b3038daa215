"""The structured critique: its published JSON schema, the grammar each job decodes under, and its times.

The public model (`StructuredCritique`) is what `/critique` returns with `output: "json"`. The grammar a job is
decoded under is the same schema narrowed to the job: `reference_differences` only with a reference, no
time-stamped parts without audio, no findings in a long recording's summarising pass (they come from its
segments). Every string and list is bounded, so the grammar is finite and a row can always be closed.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

MAX_TIME_S = 1200.0  # MAX_TOTAL_AUDIO_SECONDS: the grammar's bound; the front clamps to the clip's own length
MAX_FINDINGS = 8  # per row; a long recording's merged critique holds its segments' together
MAX_DIFFERENCES = 6
MAX_SEGMENTS = 8  # rows of one long recording, each at most the checkpoint's per-clip limit
MAX_PLAN_ITEMS = 5


class Dimension(str, enum.Enum):
    TIMING_RHYTHM = "timing_rhythm"
    PITCH_INTONATION = "pitch_intonation"
    DYNAMICS = "dynamics"
    TONE = "tone"
    EXPRESSION = "expression"
    TECHNIQUE = "technique"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Assessment(Strict):
    score: int = Field(ge=1, le=10, description="1 (poor) to 10 (excellent).")
    comment: str = Field(max_length=240, description="One sentence on this dimension.")


class Assessments(Strict):
    timing_rhythm: Assessment
    pitch_intonation: Assessment
    dynamics: Assessment
    tone: Assessment
    expression: Assessment
    technique: Assessment


class TimeSpan(Strict):
    start_s: float = Field(ge=0, le=MAX_TIME_S, description="Seconds from the start of the recording.")
    end_s: float = Field(ge=0, le=MAX_TIME_S, description="Seconds from the start of the recording, >= start_s.")


class Finding(TimeSpan):
    dimension: Dimension
    observation: str = Field(max_length=240, description="What happened there.")
    practice: str = Field(max_length=240, description="What to practise about it.")


class ReferenceDifference(TimeSpan):
    dimension: Dimension
    difference: str = Field(max_length=240, description="How the take departs from the reference there.")


class StructuredCritique(Strict):
    """The critique as data (`output: "json"`): decoding is constrained to this schema, so it always parses."""

    summary: str = Field(max_length=600, description="The overall judgement in a few sentences.")
    assessments: Assessments = Field(description="A 1-10 score and a sentence per dimension.")
    findings: list[Finding] = Field(
        [],
        max_length=MAX_FINDINGS * MAX_SEGMENTS,
        description="Time-stamped moments, in the whole recording's time (none without audio).",
    )
    practice_plan: list[Annotated[str, Field(max_length=200)]] = Field(
        max_length=MAX_PLAN_ITEMS, description="What to practise next, in order."
    )
    reference_differences: list[ReferenceDifference] | None = Field(
        None,
        max_length=MAX_DIFFERENCES * MAX_SEGMENTS,
        description="With a reference: where the take departs from it (absent without one).",
        exclude_if=lambda differences: differences is None,  # `structured` and `text` alike: no key, not null
    )


def _printable_strings(schema: Any) -> Any:
    """Free strings as a pattern of at most maxLength characters without control characters.

    xgrammar's own string rule admits raw control characters (a tab, NUL), which strict JSON parsers refuse.
    """
    if isinstance(schema, list):
        return [_printable_strings(value) for value in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "string" and "maxLength" in schema and "enum" not in schema:
        rest = {key: value for key, value in schema.items() if key != "maxLength"}
        return rest | {"pattern": f'^[^"\\\\\\x00-\\x1f]{{0,{schema["maxLength"]}}}$'}
    return {key: _printable_strings(value) for key, value in schema.items()}


def grammar_schema(reference: bool, timed: bool) -> dict[str, Any]:
    """The JSON schema one job is decoded under (see the module docstring)."""
    schema = StructuredCritique.model_json_schema()
    properties = schema["properties"]
    properties["findings"] = {"type": "array", "items": {"$ref": "#/$defs/Finding"}, "maxItems": MAX_FINDINGS}
    required = ["summary", "assessments", "findings", "practice_plan"]
    if reference and timed:
        properties["reference_differences"] = {
            "type": "array",
            "items": {"$ref": "#/$defs/ReferenceDifference"},
            "maxItems": MAX_DIFFERENCES,
        }
        required.append("reference_differences")
    else:
        del properties["reference_differences"]
    if not timed:
        del properties["findings"]
        required.remove("findings")
    schema["required"] = required
    return _printable_strings(schema)


def grammar_text(reference: bool, timed: bool) -> str:
    """`grammar_schema` as the string a runner job carries (key order kept: it is the output's order)."""
    return json.dumps(grammar_schema(reference, timed), separators=(",", ":"))


class CriticVerdict(Strict):
    """Music Flamingo's judgement of one generated candidate (`rank_by: critic`)."""

    score: int = Field(ge=1, le=10, description="How well the audio matches the prompt and how clean it is, 1-10.")
    reason: str = Field(max_length=200, description="Why, in a sentence.")


CRITIC_SCHEMA_TEXT = json.dumps(_printable_strings(CriticVerdict.model_json_schema()), separators=(",", ":"))


def every_grammar_text() -> list[str]:
    """Every schema a row may be decoded under, for a runner to compile before its first request."""
    return [grammar_text(reference, timed) for reference in (False, True) for timed in (False, True)] + [
        CRITIC_SCHEMA_TEXT
    ]


def critic_prompt(prompt: str) -> str:
    return (
        f'This audio was generated from the text prompt "{prompt}". Listen to it and judge how well it matches the '
        "prompt and how clean it is (noise, clicks, distortion, clipping). Answer with one JSON object: a `score` "
        "from 1 (poor) to 10 (excellent) and a one-sentence `reason`."
    )


def instruction(reference: bool, timed: bool) -> str:
    """What the model is told to write; the grammar enforces it, the instruction makes real weights write well."""
    parts = [
        "Answer with one JSON object only: `summary` (the overall judgement), `assessments` (for timing_rhythm, "
        "pitch_intonation, dynamics, tone, expression and technique: a `score` from 1 to 10 and a one-sentence "
        "`comment`)"
    ]
    if timed:
        parts.append(
            "`findings` (moments worth attention: `start_s` and `end_s` in seconds from the start of the recording, "
            "the `dimension`, an `observation` and what to `practice`)"
        )
    parts.append("`practice_plan` (up to five things to practise, most useful first)")
    if reference and timed:
        parts.append("`reference_differences` (where the performance departs from the reference, with times)")
    return ", ".join(parts) + "."


Loaded = TypeVar("Loaded", bound=BaseModel)


def load_decoded(text: str, model: type[Loaded]) -> Loaded:
    """A constrained row's text as `model`.

    The grammar counts a string's characters as it matched them; a random-weight model can write byte sequences
    that are not valid UTF-8 (a code point past U+10FFFF, a lone surrogate) which the grammar counted as one
    character and the tokenizer decodes as several U+FFFD. Such a string can come out a few characters over its
    limit: it is cut to the limit here, so the object still validates.
    """
    schema = _json_schema(model)
    return model.model_validate(_cut_strings(json.loads(text), schema, schema.get("$defs", {})))


@functools.cache
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema, generated once (read-only here)."""
    return model.model_json_schema()


def _cut_strings(value: Any, schema: dict[str, Any], definitions: dict[str, Any]) -> Any:
    if "$ref" in schema:
        schema = definitions[schema["$ref"].removeprefix("#/$defs/")]
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    schema = branches[0] if branches else schema
    if isinstance(value, str) and "maxLength" in schema:
        return value[: schema["maxLength"]]
    if isinstance(value, list):
        return [_cut_strings(item, schema.get("items", {}), definitions) for item in value]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {key: _cut_strings(item, properties.get(key, {}), definitions) for key, item in value.items()}
    return value


def _map_spans(critique: StructuredCritique, change: Callable[[TimeSpan], dict[str, float]]) -> StructuredCritique:
    """The critique with `change` applied to every time span (findings and reference differences)."""
    differences = critique.reference_differences
    return critique.model_copy(
        update={
            "findings": [f.model_copy(update=change(f)) for f in critique.findings],
            "reference_differences": None
            if differences is None
            else [d.model_copy(update=change(d)) for d in differences],
        }
    )


def clamp_times(critique: StructuredCritique, seconds: float) -> StructuredCritique:
    """Times inside [0, seconds] and end_s >= start_s: a span past the recording's end is cut to it."""

    def clamp(span: TimeSpan) -> dict[str, float]:
        start = min(span.start_s, seconds)
        return {"start_s": start, "end_s": min(max(span.end_s, start), seconds)}

    return _map_spans(critique, clamp)


def shift_times(critique: StructuredCritique, offset_s: float) -> StructuredCritique:
    """A segment's critique in the whole recording's time."""
    return _map_spans(critique, lambda span: {"start_s": span.start_s + offset_s, "end_s": span.end_s + offset_s})
