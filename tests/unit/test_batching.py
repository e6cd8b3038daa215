"""Grouping and failure isolation of one adaptive batch (runners/batching.py)."""

from __future__ import annotations

import torch

from runners.batching import group_indices, run_in_groups


def test_groups_keep_first_appearance_order() -> None:
    assert group_indices(["a1", "b1", "a2", "c1", "b2"], key=lambda s: s[0]) == [[0, 2], [1, 4], [3]]


def test_results_map_back_to_input_order() -> None:
    calls: list[list[str]] = []

    def run(group: list[str]) -> list[str]:
        calls.append(group)
        return [s.upper() for s in group]

    runs = run_in_groups(["a1", "b1", "a2"], key=lambda s: s[0], run=run)
    assert [r.output for r in runs] == ["A1", "B1", "A2"]
    assert calls == [["a1", "a2"], ["b1"]]
    assert [(r.batch_size, r.group_size) for r in runs] == [(3, 2), (3, 1), (3, 2)]


def test_an_exception_fails_only_the_job_that_raises_it() -> None:
    """A group that raises is run again job by job: the job at fault fails alone, its group-mates succeed."""

    def run(group: list[str]) -> list[str]:
        if "b-bad" in group:
            raise ValueError("boom at /srv/secret/path")
        return group

    runs = run_in_groups(["a1", "b-bad", "b2", "a2"], key=lambda s: s[0], run=run)
    assert [r.output for r in runs] == ["a1", None, "b2", "a2"]
    assert runs[1].error.kind == "internal" and "ValueError" in runs[1].error.message
    assert "/srv" not in runs[1].error.message  # exception text (paths, internals) stays in the log
    assert [r.group_size for r in runs] == [2, 1, 1, 2]


def test_out_of_memory_splits_the_group_and_fails_only_what_fails_alone() -> None:
    def run(group: list[str]) -> list[str]:
        if len(group) > 1 or group[0] == "a-huge":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return group

    runs = run_in_groups(["a1", "a-huge", "a2"], key=lambda s: s[0], run=run)
    assert [r.output for r in runs] == ["a1", None, "a2"]
    assert runs[1].error.kind == "out_of_memory"
    assert all(r.group_size == 1 for r in runs)
