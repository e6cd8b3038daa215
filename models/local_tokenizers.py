"""Tokenizers trained here with the `tokenizers` package, for the tiny profile.

The published tokenizers live on the Hugging Face hub, which this project
cannot reach in tests. Training on a fixed corpus gives deterministic
vocabularies of the same algorithms (byte-level BPE, unigram), wrapped in the
same transformers classes the real checkpoints use.
"""

from __future__ import annotations

import json

from tokenizers import ByteLevelBPETokenizer, SentencePieceUnigramTokenizer

# Prompts of the kind the service sees; enough text for a few hundred tokens.
CORPUS = [
    "A hammer hitting a wooden surface",
    "Techno music with a strong, upbeat tempo and high melodic riffs",
    "The sound of a dog barking in the distance while rain falls",
    "A gentle piano melody with soft strings in the background",
    "Low quality. Noise, distortion, clipping, hum",
    "Jazz drum kit with brushes, swing feel, double bass walking line",
    "Heavy rain on a tin roof, thunder rumbling far away",
    "Birds chirping in a forest at dawn, a stream flowing nearby",
    "An acoustic guitar strumming chords in a small room",
    "Describe the genre, tempo, key, instruments, production and mood of this track",
    "Give teaching feedback on timing, pitch, intonation, dynamics and expression",
    "Compare this performance to the reference recording and list what to practise",
    "What is the key of this piece? What is the tempo in beats per minute?",
    "A violin plays a slow scale, slightly out of tune on the high notes",
    "Crowd cheering in a stadium, whistles and applause",
    "Footsteps on gravel, a door creaks open and closes",
    "An orchestra tuning before a concert, oboe gives the A",
    "Synthesizer pads, ambient, reverb, slow evolving texture",
    "A choir singing in a cathedral with long echoes",
    "Electric guitar solo with overdrive and a wah pedal",
]


def _corpus(repeats: int = 20) -> list[str]:
    return [line for _ in range(repeats) for line in CORPUS] + [line.lower() for line in CORPUS]


def train_byte_level_bpe(vocab_size: int, special_tokens: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a byte-level BPE (the GPT-2/RoBERTa/Qwen2 family)."""
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(_corpus(), vocab_size=vocab_size, min_frequency=1, special_tokens=special_tokens)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def train_unigram(vocab_size: int, special_tokens: list[str]) -> list[tuple[str, float]]:
    """Pieces and scores of a SentencePiece-style unigram model (the T5 family)."""
    tokenizer = SentencePieceUnigramTokenizer()
    tokenizer.train_from_iterator(_corpus(), vocab_size=vocab_size, special_tokens=special_tokens, unk_token="<unk>")
    model = json.loads(tokenizer.to_str())["model"]
    return [(piece, float(score)) for piece, score in model["vocab"]]
