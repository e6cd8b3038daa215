"""The runners' model thread (runners/model_thread.py): one thread loads and runs, with its own CPU threads."""

from __future__ import annotations

import threading

import pytest
import torch

from runners.model_thread import ModelThread


def test_every_call_runs_on_the_same_thread_with_its_own_cpu_threads() -> None:
    thread = ModelThread("test-model", cpu_threads=1)
    idents = {thread.call(threading.get_ident) for _ in range(3)}
    assert len(idents) == 1 and threading.get_ident() not in idents
    assert thread.call(torch.get_num_threads) == 1


def test_a_failure_reaches_the_caller_and_the_thread_goes_on() -> None:
    thread = ModelThread("test-model")
    with pytest.raises(ZeroDivisionError):
        thread.call(lambda: 1 / 0)
    assert thread.submit(lambda: 2).result(timeout=10) == 2
