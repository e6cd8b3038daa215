"""Fingerprints (sha256 of the float32 bytes) of the engine's output for clips up to the single-latent length,
from today's engine run as the runner serves it (its step scheduler, runners/audioldm2_in_process.py) and from
the engine as it was before long-form generation (commit 4109732, read from git, its own batch loop).

tests/test_long_form_engine.py runs this module in a fresh process (so nothing an earlier test left in the process,
thread pools or allocator state, can change the last bits) and compares the two. The cases: 2 s with two ranked
waveforms, 10 s DDIM without guidance, 30 s (the longest single latent) and a 3 s transform. Both engines run on
the same tiny model in the same process: the tiny tokenizers are trained when the models are built, and are not
byte-identical from one build to the next, so recorded fingerprints would not hold on another machine. Both run
on one model thread of 2 torch threads, as a runner's engine does (runners/model_thread.py).

    python -m tests.single_latent_fingerprints   # prints {"now": ..., "before": ...} as JSON
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEFORE_LONG_FORM = "4109732"
GENERATE = [
    {
        "prompt": "A hammer hitting a wooden surface",
        "seed": 11,
        "steps": 3,
        "duration": 2.0,
        "guidance_scale": 3.5,
        "num_waveforms": 2,
    },
    {"prompt": "rain", "seed": 12, "steps": 4, "duration": 10.0, "scheduler": "ddim", "guidance_scale": 1.0},
    {"prompt": "a long drone", "seed": 13, "steps": 2, "duration": 30.0, "guidance_scale": 2.0},
]
TRANSFORM = [{"prompt": "rain, but heavier", "seed": 14, "steps": 5, "strength": 0.6, "guidance_scale": 3.5}]


def digest(tensor: Any) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()


def engine_before_long_form() -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{BEFORE_LONG_FORM}:models/audioldm2.py"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    module = types.ModuleType("audioldm2_before_long_form")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BEFORE_LONG_FORM}:models/audioldm2.py", "exec"), module.__dict__)
    return module


def fingerprints(generate: Callable[[Any], Any], transform: Callable[[Any], Any]) -> list[tuple[str, str]]:
    """`generate` and `transform`: one job's output (its latents and waveforms)."""
    import numpy as np

    from schemas import GenerationJob, TransformJob, samples_to_bytes

    clip = (0.2 * np.sin(2 * np.pi * 220 * np.arange(48_000) / 16_000)).astype(np.float32)
    outputs = [generate(GenerationJob(**job)) for job in GENERATE]
    outputs += [transform(TransformJob(**job, samples_f32le=samples_to_bytes(clip))) for job in TRANSFORM]
    return [(digest(output.latents), digest(output.waveforms)) for output in outputs]


def main() -> None:
    os.environ["AUDIO_STUDIO_PROFILE"] = "tiny"
    os.environ.setdefault("AUDIO_STUDIO_TINY_MODEL_DIR", str(ROOT / ".cache" / "tiny-models"))
    sys.path.insert(0, str(ROOT))
    import torch

    from models.audioldm2 import AudioLDM2Engine, load_pipeline
    from models.profiles import audioldm2_checkpoint
    from runners.audioldm2_in_process import InProcessScheduler
    from runners.batching import GroupRun
    from runners.model_thread import ModelThread
    from settings import SETTINGS

    def served(run: Callable[[list[Any]], list[GroupRun[Any]]]) -> Callable[[Any], Any]:
        def one(job: Any) -> Any:
            [result] = run([job])
            assert result.error is None, result.error
            return result.output

        return one

    path = str(audioldm2_checkpoint(SETTINGS, None).path)
    thread = ModelThread("fingerprints", cpu_threads=2)
    pipe = thread.call(lambda: load_pipeline(path, torch.device("cpu"), torch.float32))
    old = thread.call(lambda: engine_before_long_form().AudioLDM2Engine(pipe))
    before = thread.call(lambda: fingerprints(lambda job: old.generate([job])[0], lambda job: old.transform([job])[0]))
    with InProcessScheduler(thread.call(lambda: AudioLDM2Engine(pipe)), thread) as scheduled:
        now = fingerprints(served(scheduled.generate), served(scheduled.transform))
    print(json.dumps({"now": now, "before": before}))


if __name__ == "__main__":
    main()
