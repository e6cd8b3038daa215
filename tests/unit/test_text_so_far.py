"""A decoding critique's text so far (the text a stream and a job's progress show): a prefix of the final text, a
character split across tokens held back until it is whole. Tiny Music Flamingo runner, in-process."""

from __future__ import annotations

import asyncio

import pytest

from runners.music_flamingo import TEXT_EVERY_TOKENS, MusicFlamingoRunner
from schemas import CritiqueJob, ProgressPhase


@pytest.fixture(scope="module")
def flamingo() -> MusicFlamingoRunner:
    return MusicFlamingoRunner()


def test_each_cut_of_the_tokens_is_a_prefix_without_a_partial_character(flamingo: MusicFlamingoRunner) -> None:
    engine = flamingo.engine
    final = "héllo wörld 中文 ok"
    tokens = [*engine.processor.tokenizer.encode(final), min(engine.eos_token_ids), engine.pad_token_id]
    cuts = [engine.text_so_far(tokens[:n], budget=len(tokens)) for n in range(len(tokens) + 1)]
    assert cuts[-1] == (final, len(tokens) - 1)  # the end of turn counts, the padding after it does not
    assert all(final.startswith(text) and "\ufffd" not in text for text, _ in cuts)
    held = [n for n in range(1, len(tokens)) if engine.decode(tokens[:n]).endswith("\ufffd")]
    assert held, "the sample text should split a character across tokens"
    for n in held:  # the partial character is held back, the whole one shows at the token that completes it
        assert cuts[n][0] == engine.decode(tokens[:n]).rstrip("\ufffd")
    assert engine.text_so_far(tokens, budget=3) == (engine.decode(tokens[:3]).rstrip("\ufffd"), 3)


def test_the_runner_posts_prefixes_of_the_final_text_every_few_tokens(
    flamingo: MusicFlamingoRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: dict[str, list[str]] = {}
    board_set = flamingo.board.set

    def recording(job_id: str, phase: ProgressPhase, done: int = 0, total: int = 0, text: str | None = None) -> None:
        if text is not None:
            posted.setdefault(job_id, []).append(text)
        board_set(job_id, phase, done, total, text)

    monkeypatch.setattr(flamingo.board, "set", recording)
    jobs = [
        CritiqueJob(prompt=prompt, clips_f32le=[], max_new_tokens=40, do_sample=True, temperature=1.5, seed=seed)
        for seed, prompt in enumerate(["a violin", "a drum kit played with brushes"])
    ]
    outcomes = asyncio.run(flamingo.critique(jobs))
    for job, outcome in zip(jobs, outcomes, strict=True):
        texts = posted[job.job_id]
        assert outcome.text is not None and all(outcome.text.startswith(text) for text in texts)
        assert texts == sorted(texts, key=len)  # it only grows
        assert len(set(texts)) >= outcome.tokens_generated // (2 * TEXT_EVERY_TOKENS)  # read every few tokens
