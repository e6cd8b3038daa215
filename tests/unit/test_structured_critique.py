"""Structured critique on the tiny Music Flamingo (random weights): the grammar alone guarantees the shape.

Every preset's prompt, with and without audio and a reference, greedy and sampled, alone and in batches mixed
with free-text rows: the text parses and validates against the published schema; greedy rows are the same
batched as alone; a short budget closes the object early instead of cutting it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xgrammar
from pydantic import TypeAdapter

from critique_format import (
    CRITIC_SCHEMA_TEXT,
    CriticVerdict,
    Dimension,
    StructuredCritique,
    clamp_times,
    grammar_schema,
    grammar_text,
    shift_times,
)
from front.studio import merged, plan_segments
from models.music_flamingo import CritiqueJob, FieldError, MusicFlamingoEngine, load_music_flamingo
from models.tiny_music_flamingo import AF3_VARIANT, save_tiny_music_flamingo
from presets import NEEDS_REFERENCE, Preset, compose_prompt

RATE = 16_000


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> MusicFlamingoEngine:
    path: Path = tmp_path_factory.mktemp("structured") / AF3_VARIANT
    save_tiny_music_flamingo(path, AF3_VARIANT)
    model, processor = load_music_flamingo(str(path), torch.device("cpu"), torch.float32)
    return MusicFlamingoEngine(model, processor)


def clip(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 0.1).astype(np.float32)


def structured_job(
    engine: MusicFlamingoEngine, preset: Preset | None, clips: int, budget_over_reserve: int = 60, **sampling
) -> CritiqueJob:
    reference, timed = clips == 2, clips > 0
    schema = grammar_text(reference, timed)
    budget = engine.grammars.grammar(schema).reserve + budget_over_reserve
    prompt = compose_prompt(preset, None if preset or clips else "How is this?")  # (None, clips): audio only
    return CritiqueJob(prompt, [clip(2.0 + k, k) for k in range(clips)], budget, json_schema=schema, **sampling)


def valid(text: str) -> StructuredCritique:
    critique = StructuredCritique.model_validate_json(text)
    assert critique.model_dump(exclude_none=True).keys() >= {"summary", "assessments", "findings", "practice_plan"}
    return critique


CASES = [(preset, 2 if preset in NEEDS_REFERENCE else 1) for preset in Preset] + [(None, 0), (None, 1), (None, 2)]
SAMPLED: dict[str, Any] = {"do_sample": True, "temperature": 1.5, "top_p": 1.0, "seed": 11}


def test_every_preset_parses_greedy_and_sampled(engine: MusicFlamingoEngine) -> None:
    """Every case greedy and sampled, all in one batch (rows are batch-invariant: the mixed batch below)."""
    cases = [(preset, clips, sampling) for preset, clips in CASES for sampling in ({}, SAMPLED)]
    outputs = engine.generate([structured_job(engine, preset, clips, **sampling) for preset, clips, sampling in cases])
    for (preset, clips, sampling), output in zip(cases, outputs, strict=True):
        case = (preset, clips, bool(sampling))
        critique = valid(output.text)
        assert (critique.reference_differences is not None) == (clips == 2), case
        if clips == 0:
            assert critique.findings == [], case
        assert not output.grammar_broken, case


def test_mixed_batch_greedy_rows_match_alone(engine: MusicFlamingoEngine) -> None:
    jobs = [
        structured_job(engine, Preset.FEEDBACK, 1),
        CritiqueJob("Describe it", [clip(3.0, 5)], 40),  # free text
        structured_job(engine, Preset.COMPARE, 2, do_sample=True, temperature=1.0, top_p=0.9, seed=3),
        structured_job(engine, None, 0),
        CritiqueJob(None, [clip(1.0, 7)], 25, do_sample=True, seed=9),  # free text, sampled
    ]
    batched = engine.generate(jobs)
    for job, output in zip(jobs, batched, strict=True):
        if job.json_schema:
            valid(output.text)
        assert output.token_ids == engine.generate([job])[0].token_ids  # greedy and seeded rows alike
    assert not batched[1].text.startswith("{")  # the free-text row was left alone


def test_the_smallest_budgets_close_the_object(engine: MusicFlamingoEngine) -> None:
    """Budgets 1, 2 and 7 tokens over the reserve, four seeds each, in one batch."""
    jobs = [
        structured_job(engine, Preset.COMPARE, 2, over, do_sample=True, temperature=2.0, top_p=1.0, seed=s)
        for over in (1, 2, 7)
        for s in range(4)
    ]
    for job, output in zip(jobs, engine.generate(jobs), strict=True):
        valid(output.text)
        assert output.closed_early and output.tokens_generated <= job.max_new_tokens


def test_a_budget_under_the_reserve_is_refused_naming_the_field(engine: MusicFlamingoEngine) -> None:
    job = structured_job(engine, Preset.FEEDBACK, 1, budget_over_reserve=0)
    with pytest.raises(FieldError, match="at least") as refused:
        engine.check(job)
    assert refused.value.field == "max_new_tokens"


def test_the_reserve_covers_closing_from_inside_an_open_list_item(engine: MusicFlamingoEngine) -> None:
    """The deepest state a row can stop in: inside a finding's string, with every later key still to write."""
    schema = grammar_text(True, True)
    grammar = engine.grammars.grammar(schema)
    matcher = xgrammar.GrammarMatcher(grammar.compiled)
    prefix = '{"summary": "s", "assessments": {'
    prefix += ", ".join(
        f'"{d}": {{"score": 5, "comment": "c"}}'
        for d in grammar_schema(True, True)["$defs"]["Assessments"]["properties"]
    )
    prefix += '}, "findings": [{"start_s": 1.5, "end_s": 2, "dimension": "tone", "observation": "unfinished'
    assert matcher.accept_string(prefix)
    cost = engine.grammars.close(matcher, grammar.reserve)
    assert cost is not None and cost <= grammar.reserve
    StructuredCritique.model_validate_json(prefix + engine_closing_text(engine, schema, prefix))


def engine_closing_text(engine: MusicFlamingoEngine, schema: str, prefix: str) -> str:
    """The text the closing policy writes after `prefix`, decoded."""
    matcher = xgrammar.GrammarMatcher(engine.grammars.grammar(schema).compiled)
    matcher.accept_string(prefix)
    bitmask = xgrammar.allocate_token_bitmask(1, engine.grammars.vocab_size)
    tokens = []
    while not matcher.is_completed():
        matcher.fill_next_token_bitmask(bitmask, 0)
        tokens.append(engine.grammars.closing_token(bitmask[0]))
        assert matcher.accept_token(tokens[-1])
    return engine.processor.tokenizer.decode(tokens)


def test_critic_verdicts_parse(engine: MusicFlamingoEngine) -> None:
    budget = engine.grammars.grammar(CRITIC_SCHEMA_TEXT).reserve + 30
    jobs = [CritiqueJob("Rate it", [clip(1.0, s)], budget, json_schema=CRITIC_SCHEMA_TEXT) for s in range(3)]
    for output in engine.generate(jobs):
        assert 1 <= CriticVerdict.model_validate_json(output.text).score <= 10


def bare_critique(**fields: Any) -> StructuredCritique:
    """A critique of empty texts and middling scores, with `fields` besides."""
    assessments = StructuredCritique.model_fields["assessments"].annotation.model_fields
    raw = {"summary": "", "assessments": {d: {"score": 5, "comment": ""} for d in assessments}, "practice_plan": []}
    return StructuredCritique.model_validate(raw | fields)


def test_times_are_clamped_and_shifted() -> None:
    critique = bare_critique(
        findings=[{"start_s": 7.5, "end_s": 3.0, "dimension": "tone", "observation": "", "practice": ""}],
        reference_differences=[{"start_s": 1.0, "end_s": 99.0, "dimension": "dynamics", "difference": ""}],
    )
    critique = clamp_times(critique, 5.0)
    assert (critique.findings[0].start_s, critique.findings[0].end_s) == (5.0, 5.0)
    assert (critique.reference_differences[0].start_s, critique.reference_differences[0].end_s) == (1.0, 5.0)
    moved = shift_times(critique, 600.0)
    assert (moved.findings[0].start_s, moved.reference_differences[0].end_s) == (605.0, 605.0)


def test_a_critique_without_reference_differences_has_no_such_key_as_data_or_text() -> None:
    """`structured` (the response's object) and `text` (the same object as JSON) agree: no key, not `null`."""
    critique = bare_critique()
    structured = TypeAdapter(StructuredCritique | None).dump_python(critique, mode="json")  # as a response field
    assert structured == json.loads(critique.model_dump_json()) and "reference_differences" not in structured
    assert bare_critique(reference_differences=[]).model_dump()["reference_differences"] == []  # with a reference


def test_the_published_schema_describes_every_grammar() -> None:
    """What a row is decoded under is a narrowing of the public schema (same keys, same types)."""
    public = StructuredCritique.model_json_schema()
    for reference in (False, True):
        for timed in (False, True):
            narrowed = json.loads(grammar_text(reference, timed))
            assert set(narrowed["properties"]) <= set(public["properties"])
            assert set(narrowed["$defs"]) <= set(public["$defs"])


@pytest.mark.parametrize(
    ("seconds", "segment_s", "overlap_s", "bounds"),
    [
        (3.0, 4.0, 1.0, [(0.0, 3.0)]),
        (10.0, 4.0, 1.0, [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0)]),
        (1200.0, 600.0, 10.0, [(0.0, 1220 / 3), (1190 / 3, 2410 / 3), (2380 / 3, 1200.0)]),  # equal lengths
        (9.0, 4.0, 3.0, [(0.0, 3.75), (1.75, 5.5), (3.5, 7.25), (5.25, 9.0)]),  # overlap capped at half a segment
    ],
)
def test_segments_cover_the_recording_with_overlap(
    seconds: float, segment_s: float, overlap_s: float, bounds: list[tuple[float, float]]
) -> None:
    planned = plan_segments(seconds, segment_s, overlap_s)
    assert planned == [pytest.approx(b) for b in bounds]


def test_merged_findings_are_in_the_whole_recordings_time() -> None:
    def critique(findings: list[tuple[float, float]], differences: bool) -> str:
        body = {
            "summary": "s",
            "assessments": {d.value: {"score": 5, "comment": ""} for d in Dimension},
            "findings": [
                {"start_s": a, "end_s": b, "dimension": "tone", "observation": "", "practice": ""} for a, b in findings
            ],
            "practice_plan": [],
        }
        if differences:
            body["reference_differences"] = [{"start_s": 0.5, "end_s": 9.0, "dimension": "tone", "difference": ""}]
        return json.dumps(body)

    summary = StructuredCritique.model_validate_json(critique([], False))
    texts = [critique([(1.0, 2.0)], True), critique([(0.0, 9.0), (3.5, 3.0)], True)]
    whole = merged(summary, texts, [(0.0, 4.0), (3.0, 7.0)])
    assert [(f.start_s, f.end_s) for f in whole.findings] == [(1.0, 2.0), (3.0, 7.0), (6.5, 6.5)]
    assert [(d.start_s, d.end_s) for d in whole.reference_differences] == [(0.5, 4.0), (3.5, 7.0)]
    assert whole.summary == "s"
