"""Model profiles and the loader: tiny builds, the GPT2Model checkpoint bug, the full profile offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import AudioLDM2Pipeline

from models.audioldm2 import load_pipeline
from models.memory import MemoryOptions, place
from models.music_flamingo import load_music_flamingo
from models.profiles import (
    Checkpoint,
    HubWeights,
    WeightsUnavailable,
    audioldm2_checkpoint,
    ensure_tiny,
    music_flamingo_checkpoint,
)
from models.tiny_audioldm2 import build_tiny_audioldm2
from registry import AUDIOLDM2, FAMILIES, MUSIC_FLAMINGO
from runners.startup import log_model_choice
from settings import Profile, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent.parent


def test_tiny_models_are_built_from_fixed_seeds() -> None:
    first, second = build_tiny_audioldm2(), build_tiny_audioldm2()
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "language_model", "projection_model", "vocoder"):
        a, b = getattr(first, name).state_dict(), getattr(second, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()


def test_tiny_checkpoint_has_the_published_layout(tiny_audioldm2: Checkpoint) -> None:
    index = json.loads((tiny_audioldm2.path / "model_index.json").read_text())
    assert index["_class_name"] == "AudioLDM2Pipeline"
    # Saved like cvssp/audioldm2: the shape that triggers diffusers issue 12630.
    assert index["language_model"] == ["transformers", "GPT2Model"]
    assert tiny_audioldm2.profile is Profile.TINY


def test_stock_loading_of_a_gpt2model_checkpoint_fails_and_our_loader_fixes_it(tiny_audioldm2: Checkpoint) -> None:
    stock = AudioLDM2Pipeline.from_pretrained(tiny_audioldm2.path)
    with pytest.raises(AttributeError, match="GPT2Model"):
        stock("a dog barking", num_inference_steps=1, audio_length_in_s=1.0)
    fixed = load_pipeline(str(tiny_audioldm2.path), torch.device("cpu"), torch.float32)
    assert type(fixed.language_model).__name__ == "GPT2LMHeadModel"
    audio = fixed("a dog barking", num_inference_steps=1, audio_length_in_s=1.0).audios
    assert audio.shape == (1, 16_000)


def test_tiny_build_is_cached_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIO_STUDIO_TINY_MODEL_DIR", str(tmp_path))
    settings = load_settings()
    builds: list[Path] = []

    def save(path: Path) -> None:
        builds.append(path)
        (path / "weights").write_text("w")

    first = ensure_tiny(settings, "thing", "abc", save)
    second = ensure_tiny(settings, "thing", "abc", save)
    assert first.path == second.path == tmp_path / "thing-abc"
    assert len(builds) == 1 and not builds[0].exists()  # built in a staging folder, then renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing-abc"]


def test_full_profile_without_reachable_weights_fails_with_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIO_STUDIO_PROFILE", "full")
    monkeypatch.setenv("BENTOML_HF_CACHE_DIR", str(tmp_path))  # an empty Hugging Face cache
    settings = load_settings()
    unreachable = HubWeights("cvssp/audioldm2", endpoint="http://127.0.0.1:9")
    with pytest.raises(WeightsUnavailable) as failure:
        audioldm2_checkpoint(settings, unreachable)
    message = str(failure.value)
    assert "cvssp/audioldm2" in message and "AUDIO_STUDIO_PROFILE=tiny" in message and "bentoml build" in message


OFFLINE_RESOLVE = """
from models.profiles import declare_weights
from settings import load_settings

declare_weights(load_settings(), "audio-studio/no-such-checkpoint").resolve()
"""


def test_weights_out_of_reach_stop_the_process_with_a_few_lines_not_a_hub_traceback(tmp_path: Path) -> None:
    """`bentoml serve` resolves the declared weights before any code of ours runs: what it resolves must end the
    process itself, with the instructions and status 1 (132 lines of Hugging Face traceback before)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "BENTOML_HF_CACHE_DIR": str(tmp_path)}
    env.pop("AUDIO_STUDIO_PROFILE")
    run = subprocess.run(
        [sys.executable, "-c", OFFLINE_RESOLVE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0] == (
        "audio-studio cannot start: no weights of audio-studio/no-such-checkpoint are reachable "
        "(profile 'full', the default)."
    )
    assert len(lines) == 4 and "offline" in lines[1].lower() and "AUDIO_STUDIO_PROFILE=tiny" in lines[3], lines


def test_random_profile_serves_folders_written_beforehand_under_the_checkpoint_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIO_STUDIO_PROFILE", "random")
    monkeypatch.setenv("AUDIO_STUDIO_RANDOM_MODEL_DIR", str(tmp_path))
    settings = load_settings()
    with pytest.raises(WeightsUnavailable, match=f"no model folder {tmp_path}/cvssp/audioldm2\\.\n.*--write-random"):
        audioldm2_checkpoint(settings, None)
    (tmp_path / "cvssp" / "audioldm2-large").mkdir(parents=True)
    checkpoint = audioldm2_checkpoint(settings, None, "cvssp/audioldm2-large")
    assert checkpoint == Checkpoint(tmp_path / "cvssp" / "audioldm2-large", "cvssp/audioldm2-large", Profile.RANDOM)


@pytest.mark.parametrize(("profile", "said"), [(Profile.FULL, False), (Profile.TINY, True), (Profile.RANDOM, True)])
def test_the_start_up_line_says_random_weights_unless_they_are_the_published_ones(
    caplog: pytest.LogCaptureFixture, profile: Profile, said: bool
) -> None:
    placement = place("AudioLDM2", MemoryOptions.of(AUDIOLDM2.read_settings()), torch.float16, cuda=False)
    with caplog.at_level("INFO", logger="bentoml.audio_studio"):
        log_model_choice("AudioLDM2", Checkpoint(Path("weights"), "cvssp/audioldm2", profile), placement)
    assert f"profile={profile.value} model=cvssp/audioldm2" in caplog.text
    assert ("RANDOM WEIGHTS" in caplog.text) is said


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AUDIO_STUDIO_PROFILE", "huge", "must be one of full, tiny, random"),
        ("AUDIO_STUDIO_AUDIOLDM2_CHECKPOINT", "someone/else", "must be one of cvssp/audioldm2"),
        ("AUDIO_STUDIO_AUDIOLDM2_MAX_BATCH_SIZE", "1", "between 2 and 64"),
        ("AUDIO_STUDIO_AUDIOLDM2_ATTENTION_SLICING", "maybe", "expected true/false"),
        ("AUDIO_STUDIO_AUDIOLDM2_OFFLOAD", "some", "must be one of none, model, sequential"),
        ("AUDIO_STUDIO_MUSIC_FLAMINGO_DTYPE", "float8", "must be one of auto, float32, float16, bfloat16"),
    ],
)
def test_bad_settings_fail_loudly(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}=.*{message}"):
        load_settings()
        for family in FAMILIES:
            family.read_settings()


def test_default_profile_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIO_STUDIO_PROFILE")
    settings: Settings = load_settings()
    assert settings.profile is Profile.FULL and AUDIOLDM2.read_settings().checkpoint == "cvssp/audioldm2"


@pytest.mark.parametrize(
    ("checkpoint", "model_class", "max_seconds"),
    [
        ("nvidia/music-flamingo-hf", "AudioFlamingo3ForConditionalGeneration", 600),
        ("nvidia/music-flamingo-2601-hf", "MusicFlamingoForConditionalGeneration", 1200),
        ("nvidia/music-flamingo-think-2601-hf", "MusicFlamingoForConditionalGeneration", 1200),
    ],
)
def test_every_music_flamingo_checkpoint_has_a_tiny_twin_of_its_class_and_limits(
    monkeypatch: pytest.MonkeyPatch, checkpoint: str, model_class: str, max_seconds: int
) -> None:
    monkeypatch.setenv("AUDIO_STUDIO_MUSIC_FLAMINGO_CHECKPOINT", checkpoint)
    tiny = music_flamingo_checkpoint(load_settings(), None, MUSIC_FLAMINGO.read_settings().checkpoint)
    model, processor = load_music_flamingo(str(tiny.path), torch.device("cpu"), torch.float32)
    assert type(model).__name__ == model_class
    assert processor.max_audio_len == max_seconds
