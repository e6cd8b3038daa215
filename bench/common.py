"""What every benchmark report starts with, so a number is never read without its machine and command."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_info() -> dict[str, Any] | None:
    """Name, memory and driver of GPU 0 from nvidia-smi; None where there is no NVIDIA GPU."""
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total,driver_version,clocks.max.memory",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    name, memory_mib, driver, mem_clock_mhz = (field.strip() for field in out.splitlines()[0].split(","))
    return {
        "name": name,
        "memory_mib": float(memory_mib),
        "driver": driver,
        "max_memory_clock_mhz": float(mem_clock_mhz),
    }


def machine() -> dict[str, Any]:
    """The hardware and software a result was measured on."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "gpu": gpu_info(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def header(argv: list[str] | None = None) -> dict[str, Any]:
    """Exact command line, UTC date and machine, for the top of every JSON and Markdown report."""
    args = sys.argv if argv is None else argv
    return {
        "command": shlex.join([Path(sys.executable).name, *args]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def header_markdown(head: dict[str, Any]) -> list[str]:
    m = head["machine"]
    gpu = m["gpu"]["name"] if m["gpu"] else "none"
    return [
        f"- command: `{head['command']}`",
        f"- date: {head['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), GPU: {gpu}, "
        f"load average at start {m['load_average_at_start'][0]:.2f}",
        f"- software: Python {m['python']}, torch {m['torch']}",
    ]


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean (numpy's linear interpolation); with 16 samples p99 is close to the maximum."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    array = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "p99": float(np.percentile(array, 99)),
        "mean": float(array.mean()),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_report(folder: Path, name: str, report: dict[str, Any], markdown: str) -> None:
    """A benchmark's report as `name`.json (the figures) and `name`.md (the tables) side by side in `folder`."""
    write_json(folder / f"{name}.json", report)
    (folder / f"{name}.md").write_text(markdown)


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def tensor_bytes(tensor: Any) -> int:
    """Storage of a tensor, or of the inner tensors of a tensor subclass (torchao's int8 data and scales)."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()
