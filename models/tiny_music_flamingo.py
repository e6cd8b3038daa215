"""Random-weight Music Flamingo checkpoints of the published classes, small enough for CPU tests.

Two variants, one per published checkpoint layout:

* `music-flamingo-hf`: `AudioFlamingo3ForConditionalGeneration` + `AudioFlamingo3Processor`
  (audio spans are bare `<sound>` runs; at most 600 s of audio);
* `music-flamingo-2601-hf`: `MusicFlamingoForConditionalGeneration` + `MusicFlamingoProcessor`
  (`<|sound_bos|>`/`<|sound_eos|>` around each span, rotary time embeddings; at most 1200 s).

What the service depends on matches the real checkpoints: the Whisper front end
(16 kHz, 128 mel bins, hop 160, n_fft 400, 30 s windows = 750 `<sound>` tokens),
a Qwen2 byte-level BPE tokenizer with the ChatML and audio special tokens, a
chat template, and each processor's `max_audio_len`. Widths, depths and the
vocabulary are shrunk. The chat template ships with the real checkpoints (not
with transformers), so the one here is written to produce the string
transformers' processor tests assert for them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AudioFlamingo3Config,
    AudioFlamingo3EncoderConfig,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Processor,
    GenerationConfig,
    MusicFlamingoConfig,
    MusicFlamingoForConditionalGeneration,
    MusicFlamingoProcessor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2Config,
    Qwen2Tokenizer,
    WhisperFeatureExtractor,
)

from models.local_tokenizers import train_byte_level_bpe

SEED = 0
VOCAB_SIZE = 400
AUDIO_DIM = 16
TEXT_DIM = 32

AF3_VARIANT = "music-flamingo-hf"
MF_VARIANT = "music-flamingo-2601-hf"
VARIANTS = (AF3_VARIANT, MF_VARIANT)
# Published checkpoint -> the tiny layout of the same classes and limits (the "think" model differs in weights only).
TINY_LAYOUT_OF = {
    "nvidia/music-flamingo-hf": AF3_VARIANT,
    "nvidia/music-flamingo-2601-hf": MF_VARIANT,
    "nvidia/music-flamingo-think-2601-hf": MF_VARIANT,
}

# Seconds of audio each processor accepts: the processor classes' defaults, which the published checkpoints keep.
MAX_AUDIO_SECONDS = {AF3_VARIANT: 600, MF_VARIANT: 1200}

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SOUND = "<sound>"
SOUND_BOS = "<|sound_bos|>"
SOUND_EOS = "<|sound_eos|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END, SOUND, SOUND_BOS, SOUND_EOS]

# System prompts of the published templates, as transformers' processor tests assert them.
SYSTEM_PROMPTS = {
    AF3_VARIANT: "You are a helpful assistant.",
    MF_VARIANT: (
        "You are Music Flamingo, a multimodal assistant for language and music. "
        "On each turn you receive an audio clip which contains music and optional text, "
        "you will receive at least one or both; use your world knowledge and reasoning "
        "to help the user with any task. Interpret the entirety of the content any input music"
        "--regardlenss of whether the user calls it audio, music, or sound."
    ),
}

# ChatML. In a user turn every audio part becomes one `<sound>` placeholder, all of them before the
# turn's text (the processor expands each into that clip's span). `{%- -%}` trims literal newlines,
# so newlines are emitted as `{{ '\n' }}`.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system' }}{{ '\\n' }}{{ default_system_prompt }}{{ '<|im_end|>' }}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] }}{{ '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'audio' -%}{{ '<sound>' }}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>' }}{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant' }}{{ '\\n' }}{%- endif -%}"
)


def chat_template(variant: str) -> str:
    """The template with the variant's default system prompt baked in (no template variables to pass)."""
    system = SYSTEM_PROMPTS[variant].replace("'", "\\'")
    return "{%- set default_system_prompt = '" + system + "' -%}" + CHAT_TEMPLATE


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown Music Flamingo variant {variant!r}; expected one of {VARIANTS}")


def build_tokenizer() -> Qwen2Tokenizer:
    """A Qwen2 byte-level BPE trained here; like Qwen2.5 chat models it ends a turn with `<|im_end|>`."""
    vocab, merges = train_byte_level_bpe(VOCAB_SIZE, SPECIAL_TOKENS)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=END_OF_TEXT,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        extra_special_tokens=[IM_START, SOUND, SOUND_BOS, SOUND_EOS],
        model_max_length=131072,
    )


def build_processor(variant: str) -> ProcessorMixin:
    """The variant's processor class around a Whisper front end with the checkpoints' settings."""
    _check_variant(variant)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16_000, hop_length=160, chunk_length=30, n_fft=400, return_attention_mask=True
    )
    tokenizer = build_tokenizer()
    template = chat_template(variant)
    if variant == AF3_VARIANT:
        return AudioFlamingo3Processor(
            feature_extractor, tokenizer, chat_template=template, max_audio_len=MAX_AUDIO_SECONDS[variant]
        )
    return MusicFlamingoProcessor(
        feature_extractor, tokenizer, chat_template=template, max_audio_len=MAX_AUDIO_SECONDS[variant]
    )


def _text_config(tokenizer: Qwen2Tokenizer) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _audio_config() -> AudioFlamingo3EncoderConfig:
    # max_source_positions stays 1500: one 30 s window is 3000 mel frames, 1500 after the stride-2 conv.
    return AudioFlamingo3EncoderConfig(
        num_mel_bins=128,
        hidden_size=AUDIO_DIM,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_source_positions=1500,
    )


def build_tiny_music_flamingo(variant: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build model and processor in memory; the same seed always gives the same weights."""
    processor = build_processor(variant)
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    common = {
        "audio_config": _audio_config().to_dict(),
        "text_config": _text_config(tokenizer).to_dict(),
        "audio_token_id": ids[SOUND],
    }
    torch.manual_seed(SEED)
    if variant == AF3_VARIANT:
        model: PreTrainedModel = AudioFlamingo3ForConditionalGeneration(AudioFlamingo3Config(**common))
    else:
        config = MusicFlamingoConfig(**common, audio_bos_token_id=ids[SOUND_BOS], audio_eos_token_id=ids[SOUND_EOS])
        model = MusicFlamingoForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids[IM_END], ids[END_OF_TEXT]],
        pad_token_id=ids[END_OF_TEXT],
        do_sample=False,
    )
    return model.eval(), processor


def save_tiny_music_flamingo(path: Path, variant: str) -> None:
    """Write a checkpoint folder that loads like the published one (`from_pretrained` on model and processor)."""
    model, processor = build_tiny_music_flamingo(variant)
    model.save_pretrained(path)
    processor.save_pretrained(path)
