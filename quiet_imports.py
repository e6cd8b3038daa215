"""Silences the warnings that torch's libraries log while they are imported, which say nothing about this service.

Imported first by service.py and runners/__init__.py, before any of those libraries: each process of a
`bentoml serve` logged about 20 such lines at start, which read like faults. Each filter drops one known message
on the one logger that logs it, so every other warning of these libraries still shows.

- torchao: its optional compiled kernels (`_C*.so`) are built for other Python and CUDA versions than these
  wheels' ("Failed to load .../torchao/_C_mxfp8...so"); quantization falls back to plain PyTorch ops.
- torch.utils._pytree: torchao registers its enums as pytree constants, which torch now calls deprecated.
- bitsandbytes: its faster CPU 4-bit kernel comes from the optional `kernels` package; without it bitsandbytes
  uses its own.
- diffusers: its torchao quantizer cannot import the Tensor classes of torchao checkpoints with this torchao;
  no checkpoint served here is serialized with torchao.
"""

from __future__ import annotations

import logging

HARMLESS: dict[str, tuple[str, ...]] = {
    "torchao": ("Failed to load ",),
    "torch.utils._pytree": ("%s is an Enum subclass and is now natively supported by torch.compile",),
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects",),
}


class KnownHarmless(logging.Filter):
    """Drops the records of one logger whose message (before formatting) starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


for name, prefixes in HARMLESS.items():
    logging.getLogger(name).addFilter(KnownHarmless(prefixes))
