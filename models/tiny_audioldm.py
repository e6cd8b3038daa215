"""A random-weight AudioLDM (v1) of the published classes, small enough for CPU tests.

What the service depends on matches `cvssp/audioldm-*`: 16 kHz audio, 64 mel bins, 100 mel frames per second
(vocoder upsampling 160), a VAE with scale factor 4 and 8 latent channels, and a UNet conditioned through its
class embedding on CLAP's normalised text embedding (no cross-attention). Everything else is shrunk; the VAE,
vocoder and tokenizer are built as the tiny AudioLDM2's are.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AudioLDMPipeline, UNet2DConditionModel
from transformers import ClapTextModelWithProjection

from models.tiny_audioldm2 import (
    CLAP_DIM,
    SEED,
    UNET_LAYOUT,
    tiny_clap_text_config,
    tiny_scheduler,
    tiny_tokenizers,
    tiny_vae,
    tiny_vocoder,
)


def build_tiny_audioldm() -> AudioLDMPipeline:
    """Build the pipeline in memory; the same seed always gives the same weights."""
    tokenizer, _ = tiny_tokenizers()
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        **UNET_LAYOUT,
        cross_attention_dim=UNET_LAYOUT["block_out_channels"],  # self-attention only: no encoder states
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=CLAP_DIM,
        class_embeddings_concat=True,
    )
    torch.manual_seed(SEED)
    text_encoder = ClapTextModelWithProjection(tiny_clap_text_config(len(tokenizer)))
    return AudioLDMPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=tiny_scheduler(),
        vocoder=tiny_vocoder(),
    )


def save_tiny_audioldm(path: Path) -> None:
    build_tiny_audioldm().save_pretrained(path)
