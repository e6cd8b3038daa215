"""AudioLDM2's UNet compiles as one graph: dynamo skips the one log call inside its forward.

What it changes: `ignore_unet_forward_logging()` adds the `info` method of diffusers' AudioLDM2 model module's
logger to `torch._dynamo.config.ignore_logging_functions` (torch's documented switch for this), so dynamo
drops the call instead of breaking the graph there. torch 2.13 keeps dynamo's settings per thread (a mutable
default is copied into the thread's own override when first read), so models/compiled_unet.py calls it on the
thread that compiles, at the start of its warm-up.

Why: `AudioLDM2UNet2DConditionModel.forward` logs "Forward upsample size to force interpolation output size."
whenever a latent's length is not a multiple of the UNet's overall up factor, which most clip lengths are not.
Dynamo cannot trace a logging call, so it split the UNet into two graphs at that line (two compiles, a host
round trip between them, and no whole-UNet CUDA graph). It relies on diffusers' private module logger; the
message itself is of no use to the service. Checked with diffusers 0.42.1 only.
"""

from __future__ import annotations

import torch
from diffusers.pipelines.audioldm2 import modeling_audioldm2

from compat import Patch

PATCH = Patch(
    name="diffusers_unet_logging",
    library="diffusers",
    checked="==0.42.1",
    why="AudioLDM2's UNet forward logs inside the graph, which splits it in two under torch.compile",
)


def ignore_unet_forward_logging() -> None:
    torch._dynamo.config.ignore_logging_functions.add(modeling_audioldm2.logger.info)
