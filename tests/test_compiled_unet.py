"""AudioLDM2's UNet compiled at start-up: after `warm_up`, a mixed workload compiles nothing, and its audio equals
the eager UNet's.

Dynamo alone (`backend="eager"`): the guards and recompilations are dynamo's, and they are what decides whether a
request could wait for a compile; inductor's code generation takes minutes per graph on 2 cores, so its
difference from eager and its cached second start are measured by bench/compile.py. Serverless but ~1 min
(each graph is traced in ~20 s), so it sits outside the unit tier.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch._dynamo.utils import counters

from bench.compile import graphs, mixed_workload, run_workload
from models.audioldm2 import AudioLDM2Engine
from runners.audioldm2_in_process import InProcessScheduler

MAX_ROWS = 8  # row buckets 4 and 8 on a CPU


@pytest.fixture(scope="module")
def compiled(engine: AudioLDM2Engine) -> Iterator[tuple[AudioLDM2Engine, int]]:
    """An engine on the same weights with its UNet compiled and warmed up; the graphs the warm-up compiled."""
    torch._dynamo.reset()
    before = graphs()
    compiled = AudioLDM2Engine(engine.pipe, max_rows=MAX_ROWS, compile="default", compile_backend="eager")
    compiled.warm_up()
    yield compiled, graphs() - before
    torch._dynamo.reset()


def test_the_warm_up_compiles_every_shape_a_mixed_workload_then_takes(
    compiled: tuple[AudioLDM2Engine, int],
) -> None:
    engine, warmed = compiled
    assert warmed > 0
    graphs_before = graphs()
    with InProcessScheduler(engine) as scheduler:
        run_workload(scheduler, mixed_workload(long_clip=False))  # a long clip's windows: the warm-up's own length
    assert graphs() == graphs_before, "a request compiled the UNet again"
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])


def test_the_compiled_unet_makes_the_eager_unet_s_audio(
    engine: AudioLDM2Engine, compiled: tuple[AudioLDM2Engine, int]
) -> None:
    batches = mixed_workload(long_clip=False)
    with InProcessScheduler(engine) as eager, InProcessScheduler(compiled[0]) as compiled_scheduler:
        pairs = zip(run_workload(eager, batches), run_workload(compiled_scheduler, batches), strict=True)
    for eager_audio, compiled_audio in pairs:
        assert torch.equal(eager_audio, compiled_audio)
