"""AudioLDM2's language model is loaded as `GPT2LMHeadModel`, whatever class the checkpoint names.

What it changes: models/audioldm2.py loads the pipeline's `language_model` with `load_language_model` and hands
it to `AudioLDM2Pipeline.from_pretrained(..., language_model=...)`, in place of the class `model_index.json`
names.

Why: the published checkpoints (`cvssp/audioldm2` and its siblings) list their language model as `GPT2Model`,
which lacks the generation helpers diffusers' `AudioLDM2Pipeline.generate_language_model` calls
(`_update_model_kwargs_for_generation`): generation fails with an AttributeError. The same weights loaded as
`GPT2LMHeadModel` work (output bit-identical to a `GPT2LMHeadModel` checkpoint); for a checkpoint already saved
as `GPT2LMHeadModel` this is the same load. Upstream: diffusers issue 12630. Checked with diffusers 0.42.1
(and transformers 5.23.0) only.
"""

from __future__ import annotations

from typing import Any

from transformers import GPT2LMHeadModel

from compat import Patch

PATCH = Patch(
    name="diffusers_language_model",
    library="diffusers",
    checked="==0.42.1",
    why="AudioLDM2 checkpoints name GPT2Model, which lacks the generation helpers the pipeline calls",
    upstream="diffusers issue 12630",
)


def load_language_model(path: str, **options: Any) -> GPT2LMHeadModel:
    """The `language_model` folder of an AudioLDM2 checkpoint as GPT2LMHeadModel (`options`: from_pretrained's)."""
    return GPT2LMHeadModel.from_pretrained(path, subfolder="language_model", **options)
