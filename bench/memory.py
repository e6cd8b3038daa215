"""Weight memory of the quantization settings at full size, and what int8 costs in speed on this CPU.

Random weights at the published architectures (bench/fullsize.py builds them):

* AudioLDM2 base UNet (347 M parameters): float32 vs int8 weights (torchao weight-only, as
  AUDIO_STUDIO_AUDIOLDM2_QUANTIZATION=int8 applies it), bytes of every weight tensor, and the median time of
  one UNet forward (guidance rows of a 10 s clip, 2 rows) on this machine.
* Music Flamingo: the language model (Qwen2.5-7B) in bfloat16 vs int8. Built at full width with 2 decoder
  layers (all 28 would not fit beside the float copy in this machine's memory); the bytes of one layer are
  measured and the whole model is that x 28 plus the embeddings, norm and lm_head, which stay in bfloat16, as
  do the audio encoder and projector (counted from their shapes).

    .venv/bin/python bench/memory.py        # ~2 min on 2 CPU cores; bench/results/memory.json and .md
    .venv/bin/python bench/memory.py --smoke --out /tmp/memory   # the weights only, no UNet forward timed (CI)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
import bench.tiny_profile  # noqa: F401  # the tiny profile (tokenizers), before any project import

# isort: split
import torch
from torch import nn
from transformers import AudioFlamingo3ForConditionalGeneration

from bench.common import DEFAULT_OUT, header, header_markdown, tensor_bytes, write_report
from bench.fullsize import audioldm2_unet, music_flamingo_config
from models import tiny_music_flamingo
from models.memory import quantize_linear_weights

GIB = 2**30
LAYERS_BUILT = 2
LAYERS_PUBLISHED = 28


def module_bytes(module: nn.Module) -> int:
    return sum(tensor_bytes(p) for p in module.parameters()) + sum(tensor_bytes(b) for b in module.buffers())


def unet_forward_s(unet: nn.Module, repeats: int) -> float:
    latents = torch.randn(2, 8, 256, 16)
    t5 = torch.randn(2, 128, 1024)
    gpt = torch.randn(2, 8, 768)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            started = time.perf_counter()
            unet(latents, torch.tensor([500, 500]), encoder_hidden_states=gpt, encoder_hidden_states_1=t5)
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def bench_unet(repeats: int) -> dict[str, Any]:
    """Weights of each setting, and (with `repeats`) one forward's median time."""
    torch.manual_seed(0)
    unet = audioldm2_unet("base").eval()
    fp32 = {"weights_gib": module_bytes(unet) / GIB, "forward_s": unet_forward_s(unet, repeats) if repeats else None}
    quantize_linear_weights(unet)
    int8 = {"weights_gib": module_bytes(unet) / GIB, "forward_s": unet_forward_s(unet, repeats) if repeats else None}
    return {"float32": fp32, "int8": int8}


def bench_language_model() -> dict[str, Any]:
    processor = tiny_music_flamingo.build_processor(tiny_music_flamingo.AF3_VARIANT)
    config = music_flamingo_config(processor, layers=LAYERS_BUILT)
    with torch.device("meta"):
        full = AudioFlamingo3ForConditionalGeneration(music_flamingo_config(processor))
    audio_side = sum(
        p.numel() for m in (full.model.audio_tower, full.model.multi_modal_projector) for p in m.parameters()
    )
    del full
    model = AudioFlamingo3ForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    language = model.model.language_model
    results = {}
    for name in ("bfloat16", "int8"):
        if name == "int8":
            quantize_linear_weights(language)
        layer = module_bytes(language.layers[0])
        rest = module_bytes(language) - LAYERS_BUILT * layer + module_bytes(model.lm_head)
        results[name] = {
            "layer_gib": layer / GIB,
            "language_model_gib": (LAYERS_PUBLISHED * layer + rest) / GIB,
            "audio_encoder_and_projector_gib": audio_side * 2 / GIB,  # bfloat16 in both
        }
        results[name]["whole_model_gib"] = (
            results[name]["language_model_gib"] + results[name]["audio_encoder_and_projector_gib"]
        )
    del model
    gc.collect()
    return results


def forward_cell(seconds: float | None) -> str:
    return "not timed" if seconds is None else f"{seconds:.2f} s"


def markdown(report: dict[str, Any]) -> str:
    unet, lm = report["unet"], report["music_flamingo"]
    lines = ["# Weight memory of the quantization settings (full size, random weights)", "", *header_markdown(report)]
    lines += [
        "",
        "| model | weights | GiB of weights | one forward on this CPU |",
        "|---|---|---:|---:|",
        *[
            f"| AudioLDM2 base UNet | {name} | {row['weights_gib']:.3f} | {forward_cell(row['forward_s'])} |"
            for name, row in unet.items()
        ],
        *[
            f"| Music Flamingo (language model; whole model) | {name} | {row['language_model_gib']:.2f}; "
            f"{row['whole_model_gib']:.2f} | not timed |"
            for name, row in lm.items()
        ],
        "",
        f"Music Flamingo: one decoder layer measured at full width ({LAYERS_BUILT} built), x {LAYERS_PUBLISHED}, plus "
        "the embeddings, final norm and lm_head (bfloat16 in both rows), plus the audio encoder and projector "
        "(bfloat16, from their shapes).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=3, help="timed UNet forwards per configuration")
    parser.add_argument("--smoke", action="store_true", help="the weights only, no forward timed (CI)")
    args = parser.parse_args()
    repeats = 0 if args.smoke else args.repeats
    report = header() | {"unet": bench_unet(repeats), "music_flamingo": bench_language_model()}
    write_report(args.out, "memory", report, markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
