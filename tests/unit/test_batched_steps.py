"""Batched scheduler steps (models/batched_steps.py) against diffusers' own `step`, bit for bit on the CPU in fp32:
alone, from a later first step (a transform), and with other jobs' rows at other steps in the same update."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from models.audioldm2 import AudioLDM2Engine
from models.batched_steps import Schedule, coefficient_rows, step
from models.tiny_audioldm2 import tiny_scheduler

CPU = torch.device("cpu")
SHAPE = (2, 8, 6, 4)


def scheduler(kind: type[SchedulerMixin], steps: int, first: int = 0, **config: object) -> SchedulerMixin:
    made = kind.from_config(tiny_scheduler().config, **config)
    made.set_timesteps(steps)
    if first and hasattr(made, "set_begin_index"):
        made.set_begin_index(first)
    return made


def outputs(steps: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=generator) for _ in range(steps + 1)]


@pytest.mark.parametrize("kind", [DDIMScheduler, DPMSolverMultistepScheduler], ids=["ddim", "dpm++"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(("steps", "first"), [(1, 0), (2, 0), (5, 0), (25, 0), (10, 4)])
def test_each_step_is_diffusers_step_bit_for_bit(
    kind: type[SchedulerMixin], prediction: str, steps: int, first: int
) -> None:
    stock = scheduler(kind, steps, first, prediction_type=prediction)
    schedule = Schedule.of(stock, first)
    assert schedule.timesteps == tuple(int(t) for t in stock.timesteps[first:])
    noise, *model_outputs = outputs(steps, seed=steps)
    expected, sample, previous = noise, noise, None
    for k, (t, output) in enumerate(zip(stock.timesteps[first:], model_outputs, strict=False)):
        expected = stock.step(output, t, expected, return_dict=False)[0]
        coefficients = coefficient_rows([(schedule.coefficients[k], SHAPE[0])], CPU)
        sample, previous = step(schedule.updates[k], prediction, coefficients, output, sample, previous)
        assert torch.equal(sample, expected), (k, (sample - expected).abs().max())


@pytest.mark.parametrize("kind", [DDIMScheduler, DPMSolverMultistepScheduler], ids=["ddim", "dpm++"])
def test_jobs_at_other_steps_in_one_update_each_get_what_they_get_alone(kind: type[SchedulerMixin]) -> None:
    """Two jobs of 6 and 9 steps, the second started 2 steps later: each step of both as one update where both
    take the same one (the same op sequence), each row with its own job's coefficients."""
    schedules = [Schedule.of(scheduler(kind, 6)), Schedule.of(scheduler(kind, 9))]
    runs = [outputs(6, seed=1), outputs(9, seed=2)]
    alone = []
    for schedule, (noise, *outs) in zip(schedules, runs, strict=True):
        sample, previous = noise, None
        for k, output in enumerate(outs[: len(schedule.timesteps)]):
            coefficients = coefficient_rows([(schedule.coefficients[k], SHAPE[0])], CPU)
            sample, previous = step(schedule.updates[k], "epsilon", coefficients, output, sample, previous)
        alone.append(sample)
    samples, previous = [runs[0][0], runs[1][0]], [None, None]
    done, shared = [0, 0], 0
    for tick in range(11):
        ready = [j for j in (0, 1) if done[j] < len(schedules[j].timesteps) and (j == 0 or tick >= 2)]
        updates = {j: schedules[j].updates[done[j]] for j in ready}
        for update in set(updates.values()):
            group = [j for j in ready if updates[j] is update]
            shared += len(group) > 1
            rows = [(schedules[j].coefficients[done[j]], SHAPE[0]) for j in group]
            history = [previous[j] for j in group]
            new, data = step(
                update,
                "epsilon",
                coefficient_rows(rows, CPU),
                torch.cat([runs[j][1 + done[j]] for j in group]),
                torch.cat([samples[j] for j in group]),
                torch.cat(history) if all(h is not None for h in history) else None,  # type: ignore[misc]
            )
            for j, part, datum in zip(
                group,
                new.split(SHAPE[0]),
                (data.split(SHAPE[0]) if data is not None else [None] * len(group)),
                strict=True,
            ):
                samples[j], previous[j] = part, datum
                done[j] += 1
    assert done == [6, 9] and shared >= 2
    assert all(torch.equal(a, b) for a, b in zip(samples, alone, strict=True))


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        (DPMSolverMultistepScheduler, {"solver_order": 3}),
        (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
        (DDIMScheduler, {"clip_sample": True}),
        (DDIMScheduler, {"thresholding": True}),
    ],
)
def test_what_it_does_not_compute_as_diffusers_does_is_refused(
    kind: type[SchedulerMixin], config: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="unsupported scheduler"):
        Schedule.of(scheduler(kind, 4, **config))


def test_an_engine_on_such_a_scheduler_config_fails_at_start_not_per_job(engine: AudioLDM2Engine) -> None:
    original = engine.pipe.scheduler
    engine.pipe.scheduler = DDIMScheduler.from_config(original.config, thresholding=True)
    try:
        with pytest.raises(ValueError, match="unsupported scheduler"):
            AudioLDM2Engine(engine.pipe)
    finally:
        engine.pipe.scheduler = original
