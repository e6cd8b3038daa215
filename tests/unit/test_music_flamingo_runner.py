"""The Music Flamingo runner in-process: a prompt over the token limit is refused alone, the cheap bound letting
the others through without the exact count."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from runners.music_flamingo import MusicFlamingoRunner
from schemas import MAX_PROMPT_TOKENS, CritiqueJob, samples_to_bytes

RATE = 16_000


@pytest.fixture(scope="module")
def runner() -> MusicFlamingoRunner:
    return MusicFlamingoRunner()


def clip(seconds: float) -> bytes:
    return samples_to_bytes((0.1 * np.sin(np.arange(int(seconds * RATE)) / 20)).astype(np.float32))


def test_a_prompt_over_the_token_limit_is_refused_and_its_batch_runs(runner: MusicFlamingoRunner) -> None:
    """Two clips of the processor's longest (600 s here) hold ~30,000 audio tokens: over MAX_PROMPT_TOKENS."""
    longest = runner.engine.max_audio_seconds
    too_long = CritiqueJob(prompt="compare", clips_f32le=[clip(longest), clip(longest)], max_new_tokens=2, seed=1)
    fine = CritiqueJob(prompt="how is it?", clips_f32le=[clip(5)], max_new_tokens=2, seed=2)
    refused, answered = asyncio.run(runner.critique([too_long, fine]))
    assert (
        refused.error is not None
        and refused.error.field == "prompt"
        and str(MAX_PROMPT_TOKENS) in refused.error.message
    )
    assert answered.error is None and answered.text is not None
