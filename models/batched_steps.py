"""Scheduler steps for many jobs at once, with no host synchronisation: DDIM and DPM-Solver++ (2M) as diffusers
computes them, their coefficients read on the host once per job.

diffusers' schedulers step one job at a time and read device values on the way: DDIM indexes its table with
the timestep tensor and branches on `prev_timestep >= 0` (two host reads per step), DPM-Solver finds its first
step with `nonzero().item()`. On a GPU each read waits for every kernel queued before it, and the eager loop is
launch-bound, so the GPU then idles while the host queues the next pass. Here a job's schedule is read once, at
its start (`Schedule.of`): the timestep of each step it runs and its update's coefficients, as host numbers,
computed by the very tensor expressions of diffusers' `step` (so each coefficient is the same float32).
A pass then steps every job of one kind and order with one update over all their rows (`step`), each row
with its own job's coefficients: the same elementwise ops in the same order as diffusers', so each row's
result is bit-identical to the stock scheduler's on the CPU in fp32, alone or batched.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin


class Update(enum.Enum):
    """One op sequence of an update (the jobs of one pass step together when theirs is the same)."""

    DDIM = "ddim"
    DPM_FIRST = "dpm++ first order"
    DPM_SECOND = "dpm++ second order"


# The update's coefficients, in the order `step` reads them (`Schedule.coefficients` rows): DDIM's
# sqrt(1 - alpha_t), sqrt(alpha_t), sqrt(alpha_prev), sqrt(1 - alpha_prev - std^2); DPM-Solver++'s sigma_s0,
# alpha_s0, sigma_t / sigma_s0, alpha_t (e^-h - 1), then 0.5 alpha_t (e^-h - 1) and 1 / r0 (both 0 in a first
# order step), in diffusers' names.


@dataclass(frozen=True)
class Schedule:
    """One job's scheduler as host numbers, for the steps it runs (from its first, a transform's later one)."""

    prediction: str  # "epsilon" or "v_prediction" (the scheduler config's prediction_type)
    timesteps: tuple[int, ...]
    updates: tuple[Update, ...]  # per step
    coefficients: tuple[tuple[float, ...], ...]  # per step

    @classmethod
    def of(cls, scheduler: SchedulerMixin, first: int = 0) -> Schedule:
        """`scheduler` after `set_timesteps`, run from step `first` on. Only what this module computes as
        diffusers does is accepted: DDIM with eta 0, DPM-Solver++ of order 1 or 2 (midpoint), epsilon or v
        prediction, no thresholding or clipping."""
        config = scheduler.config
        if config.prediction_type not in ("epsilon", "v_prediction") or config.get("thresholding"):
            raise ValueError(f"unsupported scheduler config: prediction_type={config.prediction_type}, thresholding")
        timesteps = [int(t) for t in scheduler.timesteps.cpu()[first:]]
        if isinstance(scheduler, DDIMScheduler) and not config.clip_sample:
            steps = [_ddim(scheduler, t) for t in timesteps]
        elif isinstance(scheduler, DPMSolverMultistepScheduler) and _plain_dpm(scheduler):
            steps = [_dpm(scheduler, first + k, k) for k in range(len(timesteps))]
        else:
            raise ValueError(f"unsupported scheduler: {type(scheduler).__name__} {dict(config)}")
        return cls(
            config.prediction_type,
            tuple(timesteps),
            tuple(update for update, _ in steps),
            tuple(coefficients for _, coefficients in steps),
        )


def _ddim(scheduler: DDIMScheduler, timestep: int) -> tuple[Update, tuple[float, ...]]:
    """DDIMScheduler.step's scalars (eta 0), for `timestep`."""
    prev_timestep = timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alpha_prod_t = scheduler.alphas_cumprod[timestep].cpu()
    alpha_prod_t_prev = (
        scheduler.alphas_cumprod[prev_timestep].cpu() if prev_timestep >= 0 else scheduler.final_alpha_cumprod
    )
    beta_prod_t = 1 - alpha_prod_t
    variance = scheduler._get_variance(timestep, prev_timestep).cpu()
    std_dev_t = 0.0 * variance ** (0.5)
    values = (beta_prod_t ** (0.5), alpha_prod_t ** (0.5), alpha_prod_t_prev ** (0.5))
    values += ((1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5),)
    return Update.DDIM, tuple(float(v) for v in values)


def _plain_dpm(scheduler: DPMSolverMultistepScheduler) -> bool:
    config = scheduler.config
    return (
        config.algorithm_type == "dpmsolver++"
        and config.solver_type == "midpoint"
        and config.solver_order in (1, 2)
        and config.variance_type is None
    )


def _dpm(scheduler: DPMSolverMultistepScheduler, index: int, taken: int) -> tuple[Update, tuple[float, ...]]:
    """DPMSolverMultistepScheduler.step's scalars at step index `index`, `taken` steps after the job's first."""
    config = scheduler.config
    last = len(scheduler.timesteps) - 1
    lower_order_final = index == last and (
        config.euler_at_final or (config.lower_order_final and last + 1 < 15) or config.final_sigmas_type == "zero"
    )
    first_order = config.solver_order == 1 or taken < 1 or lower_order_final
    sigmas = scheduler.sigmas
    alpha_s0, sigma_s0 = scheduler._sigma_to_alpha_sigma_t(sigmas[index])
    alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigmas[index + 1])
    lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
    lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
    h = lambda_t - lambda_s0
    values = [sigma_s0, alpha_s0, sigma_t / sigma_s0, alpha_t * (torch.exp(-h) - 1.0)]
    if first_order:
        values += [torch.tensor(0.0), torch.tensor(0.0)]
    else:
        alpha_s1, sigma_s1 = scheduler._sigma_to_alpha_sigma_t(sigmas[index - 1])
        lambda_s1 = torch.log(alpha_s1) - torch.log(sigma_s1)
        r0 = (lambda_s0 - lambda_s1) / h
        values += [0.5 * (alpha_t * (torch.exp(-h) - 1.0)), 1.0 / r0]
    return (Update.DPM_FIRST if first_order else Update.DPM_SECOND), tuple(float(v) for v in values)


def coefficient_rows(rows: Sequence[tuple[tuple[float, ...], int]], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Each (coefficients, n) as n rows: one (rows, 1, 1, 1) float32 tensor per coefficient, copied to the device
    without waiting for it (one small host-to-device copy a pass)."""
    per_row = [coefficients for coefficients, n in rows for _ in range(n)]
    table = torch.tensor(
        [[[[[value]]] for value in column] for column in zip(*per_row, strict=True)], dtype=torch.float32
    )
    return table.to(device, non_blocking=True).unbind(0)


def step(
    update: Update,
    prediction: str,
    coefficients: Sequence[torch.Tensor],
    output: torch.Tensor,
    sample: torch.Tensor,
    previous: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One update of every row: (the next sample, in `sample`'s dtype; the data prediction that a DPM-Solver++
    job's next step reads as `previous`, None for DDIM).

    `coefficients`: per coefficient (see above), one (rows, 1, 1, 1) tensor;
    `previous`: the rows' data predictions of their last step (DPM-Solver++ second order only)."""
    dtype = sample.dtype
    if update is Update.DDIM:
        beta_root, alpha_root, alpha_prev_root, direction = coefficients
        if prediction == "epsilon":
            original = (sample - beta_root * output) / alpha_root
            epsilon = output
        else:
            original = alpha_root * sample - beta_root * output
            epsilon = alpha_root * output + beta_root * sample
        return (alpha_prev_root * original + direction * epsilon).to(dtype), None
    sigma_s0, alpha_s0, ratio, first, second, inverse_r0 = coefficients
    epsilon = prediction == "epsilon"
    data = (sample - sigma_s0 * output) / alpha_s0 if epsilon else alpha_s0 * sample - sigma_s0 * output
    upcast = sample.to(torch.float32)
    if update is Update.DPM_FIRST:
        return (ratio * upcast - first * data).to(dtype), data
    assert previous is not None
    return (ratio * upcast - first * data - second * (inverse_r0 * (data - previous))).to(dtype), data
