"""A random-weight AudioLDM2 of the published classes, small enough for CPU tests.

Shapes that the service depends on match the real checkpoints: 16 kHz audio,
64 mel bins, 100 mel frames per second (vocoder upsampling 160), a VAE with
scale factor 4 and 8 latent channels, and a language model saved as
`GPT2Model`, exactly like `cvssp/audioldm2` (so the loader's fix for diffusers
issue 12630 runs on every tiny load too). Everything else is shrunk.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AudioLDM2Pipeline,
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AutoencoderKL,
    DDIMScheduler,
)
from transformers import (
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    GPT2Config,
    GPT2Model,
    RobertaTokenizer,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from models.local_tokenizers import train_byte_level_bpe, train_unigram

SEED = 0
CLAP_DIM = 16
T5_DIM = 32
GPT2_DIM = 16
MEL_BINS = 64
T5_MAX_TOKENS = 64
LANGUAGE_MODEL_NEW_TOKENS = 8
# The UNet both tiny families share (AudioLDM v1 adds its class embedding). Attention only at the coarsest level
# keeps a 10 s clip cheap on two CPU cores.
UNET_LAYOUT = {
    "block_out_channels": (16, 32, 32),
    "norm_num_groups": 8,
    "layers_per_block": 1,
    "sample_size": 256,
    "in_channels": 8,
    "out_channels": 8,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "attention_head_dim": 8,
}


def tiny_tokenizers() -> tuple[RobertaTokenizer, T5Tokenizer]:
    vocab, merges = train_byte_level_bpe(400, ["<pad>", "<unk>", "<s>", "</s>", "<mask>"])
    roberta = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    t5 = T5Tokenizer(vocab=train_unigram(300, ["<pad>", "</s>", "<unk>"]), extra_ids=0, model_max_length=T5_MAX_TOKENS)
    return roberta, t5


def tiny_clap_text_config(vocab_size: int) -> ClapTextConfig:
    """CLAP's text tower as both tiny families have it (AudioLDM2's CLAP model, AudioLDM v1's text encoder)."""
    return ClapTextConfig(
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
        hidden_size=CLAP_DIM,
        intermediate_size=37,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        projection_dim=CLAP_DIM,
    )


def tiny_vae() -> AutoencoderKL:
    """The VAE both tiny families share: scale factor 4, 8 latent channels, as published."""
    torch.manual_seed(SEED)
    vae = AutoencoderKL(
        block_out_channels=[16, 16, 32],
        norm_num_groups=8,
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=8,
        sample_size=1024,
        scaling_factor=0.5,
    )
    return vae


def tiny_vocoder() -> SpeechT5HifiGan:
    """A HiFi-GAN of the published layout's rates: 64 mel bins in, 16 kHz out."""
    torch.manual_seed(SEED)
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=MEL_BINS,
            sampling_rate=16_000,
            upsample_initial_channel=32,
            upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[16, 16, 8, 4, 4],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
            # The default init (std 0.01) gives ~1e-10 amplitude, which 16-bit files round to silence;
            # this one gives audible noise, so tests over HTTP can tell two waveforms apart.
            initializer_range=0.15,
        )
    )
    return vocoder


def tiny_scheduler() -> DDIMScheduler:
    """The published checkpoints' DDIM settings."""
    scheduler = DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return scheduler


def build_tiny_audioldm2() -> AudioLDM2Pipeline:
    """Build the pipeline in memory; the same seed always gives the same weights."""
    tokenizer, tokenizer_2 = tiny_tokenizers()

    torch.manual_seed(SEED)
    unet = AudioLDM2UNet2DConditionModel(**UNET_LAYOUT, cross_attention_dim=([None, GPT2_DIM, T5_DIM],) * 3)
    vae = tiny_vae()
    torch.manual_seed(SEED)
    clap = ClapModel(
        ClapConfig(
            text_config=tiny_clap_text_config(len(tokenizer)).to_dict(),
            audio_config=ClapAudioConfig(
                spec_size=64,
                window_size=4,
                num_mel_bins=64,
                intermediate_size=37,
                depths=[2, 2],
                num_attention_heads=[2, 2],
                num_hidden_layers=2,
                hidden_size=192,
                projection_dim=CLAP_DIM,
                patch_size=2,
                patch_stride=2,
                patch_embed_input_channels=4,
            ).to_dict(),
            projection_dim=CLAP_DIM,
        )
    )
    # The tiny Swin audio tower needs a coarse hop (diffusers' fast tests use the same value).
    feature_extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48_000, hop_length=7900)
    torch.manual_seed(SEED)
    t5 = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer_2), d_model=T5_DIM, d_ff=37, d_kv=8, num_heads=2, num_layers=2)
    )
    torch.manual_seed(SEED)
    language_model_config = GPT2Config(
        n_embd=GPT2_DIM, n_head=2, n_layer=2, vocab_size=64, n_positions=128, bos_token_id=0, eos_token_id=0
    )
    language_model_config.max_new_tokens = LANGUAGE_MODEL_NEW_TOKENS
    language_model = GPT2Model(language_model_config)
    torch.manual_seed(SEED)
    projection = AudioLDM2ProjectionModel(
        text_encoder_dim=CLAP_DIM, text_encoder_1_dim=T5_DIM, langauge_model_dim=GPT2_DIM
    )
    vocoder, scheduler = tiny_vocoder(), tiny_scheduler()
    return AudioLDM2Pipeline(
        vae=vae,
        text_encoder=clap,
        text_encoder_2=t5,
        projection_model=projection,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor,
        unet=unet,
        scheduler=scheduler,
        vocoder=vocoder,
    )


def save_tiny_audioldm2(path: Path) -> None:
    build_tiny_audioldm2().save_pretrained(path)
