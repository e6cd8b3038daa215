"""Reading the service's Prometheus metrics in tests: adaptive batch sizes, cancelled jobs."""

from __future__ import annotations

import re

import httpx

PATTERN = (
    r'bentoml_service_adaptive_batch_size_(bucket|count)\{(?:le="([^"]+)",)?[^}]*method_name="{method}"[^}]*\} (\S+)'
)


def batch_counts(server: str, method: str) -> tuple[float, float]:
    """(batches so far, batches of size 1 so far) for a runner API."""
    metrics = httpx.get(f"{server}/metrics", timeout=10).text
    pattern = PATTERN.replace("{method}", re.escape(method))
    values = {f"{kind}:{le}": float(value) for kind, le, value in re.findall(pattern, metrics)}
    return values.get("count:", 0.0), values.get("bucket:1.0", 0.0)


def cancelled_jobs(server: str, stage: str | None = None) -> float:
    """Jobs the runners dropped because their client left or cancelled them (`stage`: queued or running)."""
    metrics = httpx.get(f"{server}/metrics", timeout=10).text
    labels = r"[^}]*" if stage is None else rf'[^}}]*stage="{stage}"[^}}]*'
    return sum(float(v) for v in re.findall(rf"^audio_studio_jobs_cancelled_total\{{{labels}\}} (\S+)", metrics, re.M))
