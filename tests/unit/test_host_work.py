"""The served step scheduler's host work per denoising step (bench/host_work.py counts it): no pass reads a device
value, and the aten ops dispatched around the UNet stay within 10% of diffusers' stock loop. Op counts are
deterministic, so they are asserted here; the time they cost is reported by the benchmark."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.host_work import CASES, Case, HostWork, Tally, compare, main, mixed
from models.audioldm2 import AudioLDM2Engine
from runners.model_thread import ModelThread


@pytest.fixture(scope="module")
def thread() -> Iterator[ModelThread]:
    yield ModelThread("audioldm2-host-work")


def test_the_counter_sees_a_host_read() -> None:
    """What the test below counts on the CPU: scalar reads (`.item()`, `float()`, `bool(tensor)`, a Python branch
    on a tensor all dispatch `_local_scalar_dense`), `equal`, `nonzero`, and the reads that dispatch nothing for
    a tensor on the CPU (`.tolist()`, `.numpy()`, `.cpu()`, `np.asarray`)."""
    mode, tally = HostWork(), Tally()
    mode.tally = tally
    with mode:
        x = torch.ones(2)
        x.sum().item(), float(x[0]), bool(x[0] > 0), 1 if x.any() else 0
        torch.equal(x, x + 1), x.nonzero()
        x.tolist(), x.numpy(), x.cpu(), np.asarray(x)
    assert tally.syncs == {
        "_local_scalar_dense": 4,
        "equal": 1,
        "nonzero": 1,
        "Tensor.tolist": 1,
        "Tensor.numpy": 1,
        "Tensor.cpu": 1,
        "Tensor.__array__": 1,
    }
    assert "tolist" not in torch.Tensor.__dict__ and x.tolist() == [1.0, 1.0]  # as it was


def test_no_pass_of_a_mixed_batch_reads_a_device_value(engine: AudioLDM2Engine, thread: ModelThread) -> None:
    """Generate and transform, guidance on and off, DPM++ and DDIM, a windowed clip, all in one scheduler: 0 syncs
    in every pass (a job's encoding and decoding are not counted)."""
    iterations = mixed(engine, thread)
    assert len(iterations) >= 6 and all(i.tally.outside > 0 and i.tally.unet > 0 for i in iterations)
    assert [dict(i.tally.syncs) for i in iterations] == [{}] * len(iterations)


@pytest.mark.parametrize("case", [CASES[1], CASES[2]], ids=lambda case: case.name)
def test_ops_per_step_outside_the_unet_are_within_10_percent_of_stock_diffusers(
    engine: AudioLDM2Engine, thread: ModelThread, case: Case
) -> None:
    row = compare(engine, thread, case, steps=2)
    assert row["ratio"] <= 1.10, row


def test_the_benchmark_smoke_writes_its_report(tmp_path: Path) -> None:
    """bench/host_work.py's smoke form (in this process: no second interpreter start), so the benchmark cannot rot."""
    assert main(["--smoke", "--steps", "2", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "host-work-smoke.json").read_text())
    assert (
        report["smoke"] is True
        and "--smoke" in report["command"]
        and [row["case"] for row in report["ops"]] == [CASES[0].name]
    )
    assert report["ops"][0]["ratio"] <= 1.10 and report["ops"][0]["served"]["syncs"] == {}
    assert "| dpm++ batch 1 |" in (tmp_path / "host-work-smoke.md").read_text()
