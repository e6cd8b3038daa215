"""transformers compiles Music Flamingo's decoding step on any device, with the runner's own backend.

What it changes: `decoding_compile_config(backend, mode)` builds the `CompileConfig` models/music_flamingo.py
passes to `generate`, with its private `_compile_all_devices` flag set.

Why: `GenerationMixin._valid_auto_compile_criteria` compiles the decoding step on CUDA, XPU, Neuron and TPU
only, unless that flag is set (its own comment: "to flag our generate call to compile on e.g. CPU ... useful for
testing purposes"). Without it `decoding=compiled` would silently run uncompiled on a CPU, and the CPU tests of
the compiled path (its tokens against the dynamic cache's, no recompilation after the warm-up) would test
nothing. No upstream issue. Checked with transformers 5.23.0 only.
"""

from __future__ import annotations

from transformers import CompileConfig

from compat import Patch

PATCH = Patch(
    name="transformers_compile_config",
    library="transformers",
    checked="==5.23.0",
    why="generate compiles the decoding step on a CPU only when CompileConfig's private flag says so",
)


def decoding_compile_config(backend: str, mode: str) -> CompileConfig:
    config = CompileConfig(backend=backend, mode=mode, dynamic=True)
    config._compile_all_devices = True
    return config
