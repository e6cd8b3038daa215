"""Prompts for the common critique jobs, so users get good answers without prompt engineering."""

from __future__ import annotations

import enum


class Preset(str, enum.Enum):
    DESCRIBE = "describe"
    CAPTION = "caption"
    KEY = "key"
    TEMPO = "tempo"
    FEEDBACK = "feedback"
    COMPARE = "compare"


PRESET_PROMPTS: dict[Preset, str] = {
    Preset.DESCRIBE: (
        "Describe this music in detail: genre and style, tempo in BPM, key and mode, instruments and voices, "
        "production and mix, structure, and mood."
    ),
    Preset.CAPTION: "Write a one-sentence caption of this music.",
    Preset.KEY: "What is the key and mode of this piece? Answer with the key (for example 'D minor') and why.",
    Preset.TEMPO: "What is the tempo of this piece in beats per minute, and its time signature?",
    Preset.FEEDBACK: (
        "You are a music teacher listening to a student's performance. Give teaching feedback: first what is good, "
        "then the main technical issues in timing and rhythm, pitch and intonation, dynamics, and expression, with "
        "the moments where they happen, and finally the two or three most useful things to practise next."
    ),
    Preset.COMPARE: (
        "The first recording is a student's performance and the second is a reference recording of the same piece. "
        "Compare the performance to the reference: tempo and timing, pitch and intonation, dynamics, articulation "
        "and expression. Say where the performance departs most from the reference and what to practise to close "
        "the gap."
    ),
}

# Presets that only make sense with audio, and with a reference recording.
NEEDS_AUDIO = frozenset(Preset)
NEEDS_REFERENCE = frozenset({Preset.COMPARE})


def compose_prompt(preset: Preset | None, prompt: str | None) -> str | None:
    """The text of the user turn: the preset's prompt, the user's, or both (preset first)."""
    parts = [PRESET_PROMPTS[preset]] if preset is not None else []
    if prompt:
        parts.append(prompt)
    return "\n\n".join(parts) or None
