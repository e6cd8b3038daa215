"""The AudioLDM2 runner in-process (its step scheduler on its own model thread): order, per-job failures,
provenance, cancellation."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from runners.audioldm2 import AudioLDM2Runner
from schemas import GenerationJob

FAST = {"steps": 3, "duration": 1.0}


@pytest.fixture(scope="module")
def runner() -> AudioLDM2Runner:
    return AudioLDM2Runner()


def jobs(n: int) -> list[GenerationJob]:
    return [GenerationJob(prompt=f"sound number {i}", seed=i, **FAST) for i in range(n)]


def test_results_come_back_in_order_with_provenance(runner: AudioLDM2Runner) -> None:
    batch = [*jobs(3), GenerationJob(prompt="longer", seed=7, steps=3, duration=2.0, num_waveforms=2)]
    outcomes = asyncio.run(runner.generate(batch))
    assert [o.waveforms[0].seed for o in outcomes[:3]] == [0, 1, 2]
    assert [len(o.waveforms[0].samples) for o in outcomes] == [16_000] * 3 + [32_000]
    assert {w.seed for w in outcomes[3].waveforms} == {7, 8}
    scores = [w.clap_score for w in outcomes[3].waveforms]
    assert scores == sorted(scores, reverse=True)
    assert all(o.provenance.profile == "tiny" and o.provenance.model_id.endswith("tiny-audioldm2") for o in outcomes)
    assert all(o.timings.batch_size == 4 for o in outcomes)


def test_a_nan_job_fails_alone(runner: AudioLDM2Runner) -> None:
    """Fault injection: the VAE decoder emits NaN for one job's decode only; the others are untouched.

    The scheduler orders decodes by the model time each job has had, so which job's decode comes second is not fixed:
    the assertion is that exactly one job fails, whichever it is."""
    batch = jobs(3)
    expected = [asyncio.run(runner.generate([j]))[0].waveforms[0].samples for j in batch]
    calls = {"n": 0}

    def poison_second_decode(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 2 else output

    handle = runner.engine.pipe.vae.decoder.register_forward_hook(poison_second_decode)
    try:
        outcomes = asyncio.run(runner.generate(batch))
    finally:
        handle.remove()
    failed = [index for index, outcome in enumerate(outcomes) if outcome.error is not None]
    assert calls["n"] == 3 and len(failed) == 1
    poisoned = outcomes[failed[0]]
    assert poisoned.error.kind == "non_finite" and "NaN" in poisoned.error.message and poisoned.waveforms == []
    for index in set(range(3)) - set(failed):
        np.testing.assert_array_equal(outcomes[index].waveforms[0].samples, expected[index])


def test_out_of_memory_in_a_group_retries_one_job_at_a_time(runner: AudioLDM2Runner) -> None:
    """Fault injection: the UNet 'runs out of memory' above 4 rows; every job still gets its own audio."""
    batch = jobs(4)
    expected = [asyncio.run(runner.generate([j]))[0].waveforms[0].samples for j in batch]

    def fail_on_big_batches(module, args, kwargs):
        if args[0].shape[0] > 4:
            raise torch.OutOfMemoryError("injected")

    handle = runner.engine.pipe.unet.register_forward_pre_hook(fail_on_big_batches, with_kwargs=True)
    try:
        outcomes = asyncio.run(runner.generate(batch))
    finally:
        handle.remove()
    for outcome, samples in zip(outcomes, expected, strict=True):
        assert outcome.error is None
        np.testing.assert_array_equal(outcome.waveforms[0].samples, samples)


def test_an_exception_fails_only_the_job_that_causes_it(runner: AudioLDM2Runner) -> None:
    batch = [*jobs(2), GenerationJob(prompt="other group", seed=3, steps=3, duration=3.0)]

    def fail_long_clips(module, args, kwargs):
        if args[0].shape[2] > 50:  # latent frames of the 3 s job only
            raise RuntimeError("injected fault")

    handle = runner.engine.pipe.unet.register_forward_pre_hook(fail_long_clips, with_kwargs=True)
    try:
        outcomes = asyncio.run(runner.generate(batch))
    finally:
        handle.remove()
    assert [o.error is None for o in outcomes] == [True, True, False]
    assert outcomes[2].error.kind == "internal" and "RuntimeError" in outcomes[2].error.message


def test_cancelled_jobs_are_dropped_before_they_run_and_stop_while_running(runner: AudioLDM2Runner) -> None:
    """The front's `cancel` for jobs whose client left: queued ones never run, a group stops at its next step."""
    queued, kept = jobs(2)
    expected = asyncio.run(runner.generate([kept]))[0].waveforms[0].samples
    runner.cancelled.add([queued.job_id])
    outcomes = asyncio.run(runner.generate([queued, kept]))
    assert outcomes[0].error is not None and outcomes[0].error.kind == "cancelled"
    assert outcomes[0].timings.group_size == 0  # never reached the model
    np.testing.assert_array_equal(outcomes[1].waveforms[0].samples, expected)

    running = GenerationJob(prompt="long", seed=5, steps=50, duration=1.0)
    steps = {"n": 0}

    def cancel_after_two_steps(module, args, kwargs):
        steps["n"] += 1
        if steps["n"] == 2:
            runner.cancelled.add([running.job_id])

    handle = runner.engine.pipe.unet.register_forward_pre_hook(cancel_after_two_steps, with_kwargs=True)
    try:
        [outcome] = asyncio.run(runner.generate([running]))
    finally:
        handle.remove()
    assert outcome.error is not None and outcome.error.kind == "cancelled"
    assert steps["n"] == 2  # stopped at the step after the cancel, not after 50
