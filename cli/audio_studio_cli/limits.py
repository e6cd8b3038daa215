"""The ranges and defaults of the request fields the CLI has options for, as the server publishes them in
`/docs.json` (schemas.py). Help texts are written from here; tests/test_cli.py fails when these differ from the
served contract, or when the contract has a ranged field the CLI does not know."""

from __future__ import annotations

Range = tuple[float, float, float | None]  # minimum, maximum, server default (None: drawn or per format)
SEEDS: Range = (0, 9007199254740991, None)
STEPS: Range = (1, 500, 25)
GUIDANCE: Range = (0.0, 20.0, 3.5)
COMPRESSION: Range = (0.0, 1.0, None)

RANGES: dict[str, dict[str, Range]] = {
    "GenerateRequest": {
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "duration": (1.0, 600.0, 10.0),
        "num_waveforms": (1, 4, 1),
        "seed": SEEDS,
        "compression": COMPRESSION,
    },
    "TransformRequest": {
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "strength": (0.0, 1.0, 0.6),
        "seed": SEEDS,
        "compression": COMPRESSION,
    },
    "EditRequest": {
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "start_s": (0.0, 600.0, None),
        "end_s": (0.0, 600.0, None),
        "seconds": (0.1, 600.0, None),
        "blend_s": (0.0, 2.0, 0.25),
        "repaint_jumps": (0, 4, 0),
        "num_waveforms": (1, 4, 1),
        "seed": SEEDS,
        "compression": COMPRESSION,
    },
    "CritiqueRequest": {
        "max_new_tokens": (1, 2048, 512),
        "temperature": (0.01, 2.0, 0.7),
        "top_p": (0.01, 1.0, 0.9),
        "seed": SEEDS,
    },
}


def span(request: str, field: str) -> str:
    """`1 to 600 (server default 10)` for a help text."""
    low, high, default = RANGES[request][field]
    text = f"{low:g} to {high:g}"
    return text if default is None else f"{text} (server default {default:g})"
