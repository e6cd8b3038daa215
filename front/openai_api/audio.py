"""POST /v1/audio/generate: vLLM-Omni's text-to-audio request as /generate's (the same batches, the same bytes for
the same seed)."""

from __future__ import annotations

from front.openai_api.errors import Refusal
from front.openai_api.protocol import AudioGenerateRequest
from registry import GENERATORS
from schemas import GenerateRequest

DEFAULTS_FROM = {
    "negative_prompt": "negative_prompt",
    "guidance_scale": "guidance_scale",
    "steps": "num_inference_steps",
}


def generation_model_ids() -> dict[str, str]:
    """Every value `model` takes -> the family: its name, and the checkpoint it is configured with."""
    ids = {}
    for family in GENERATORS:
        if family.deployed:
            ids[family.name] = ids[family.settings.checkpoint] = family.name
    return ids


def generate_request(request: AudioGenerateRequest) -> GenerateRequest:
    """/generate's request for this one (one waveform, ranked by nothing), or Refusal for an unknown model."""
    models = generation_model_ids()
    family = models.get(request.model or GENERATORS[0].name)
    if family is None:
        raise Refusal(
            "model", f"the model {request.model!r} is not served here; choose one of {', '.join(models)}", "not_found"
        )
    given = {
        native: getattr(request, ours) for native, ours in DEFAULTS_FROM.items() if getattr(request, ours) is not None
    }
    if request.audio_length is not None:
        given["duration"] = request.audio_length
    fields = {"prompt": request.input, "seed": request.seed, "format": request.response_format, "model": family}
    return GenerateRequest.model_validate({**fields, **given}, strict=False)
