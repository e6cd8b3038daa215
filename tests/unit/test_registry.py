"""The registry of model families: one name per runner, settings read by prefix, and the generated
configuration page in step with the settings classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry import AUDIOLDM2, FAMILIES, MUSIC_FLAMINGO, Family, configuration_markdown, setting_names
from settings import DiffusionSettings, MusicFlamingoSettings

ROOT = Path(__file__).resolve().parent.parent.parent


def test_docs_configuration_is_generated_from_the_settings_classes() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == configuration_markdown(), "stale: run `python -m registry > docs/configuration.md`"


def test_every_setting_the_code_reads_is_documented() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert all(f"`{name}`" in page for name in setting_names())


def test_runner_names_are_unique_and_settings_prefixes_follow_them() -> None:
    assert len({family.name for family in FAMILIES}) == len(FAMILIES)
    assert AUDIOLDM2.env_prefix == "AUDIO_STUDIO_AUDIOLDM2_"
    assert MUSIC_FLAMINGO.env_prefix == "AUDIO_STUDIO_MUSIC_FLAMINGO_"
    routes = [route for family in FAMILIES for route in family.routes]
    assert len(routes) == len(set(routes))  # a route queues on one runner


def test_runner_settings_are_read_by_prefix_into_the_kind_s_class() -> None:
    environ = {"AUDIO_STUDIO_AUDIOLDM2_OFFLOAD": "model", "AUDIO_STUDIO_AUDIOLDM2_MAX_BATCH_SIZE": "4"}
    audioldm2 = AUDIOLDM2.read_settings(environ)
    assert isinstance(audioldm2, DiffusionSettings)
    assert (audioldm2.offload, audioldm2.max_batch_size, audioldm2.checkpoint) == ("model", 4, "cvssp/audioldm2")
    flamingo = MUSIC_FLAMINGO.read_settings({"AUDIO_STUDIO_MUSIC_FLAMINGO_DECODING": "static"})
    assert isinstance(flamingo, MusicFlamingoSettings) and flamingo.decoding == "static"
    assert flamingo.max_batch_size == 8  # another runner's setting is not this one's


@pytest.mark.parametrize(
    ("family", "variable", "value", "message"),
    [
        (MUSIC_FLAMINGO, "AUDIO_STUDIO_MUSIC_FLAMINGO_CHECKPOINT", "cvssp/audioldm2", "must be one of nvidia/"),
        (MUSIC_FLAMINGO, "AUDIO_STUDIO_MUSIC_FLAMINGO_GPU_MEMORY_GIB", "nan", "between 0 and 4096"),
        (AUDIOLDM2, "AUDIO_STUDIO_AUDIOLDM2_MAX_QUEUED", "-1", "between 0 and 100000"),
    ],
)
def test_a_bad_runner_setting_names_its_variable(family: Family, variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"{variable}=.*{message}"):
        family.read_settings({variable: value})


def test_what_a_family_cannot_do_is_refused_naming_the_field() -> None:
    """The tiny profile (tests/conftest.py) deploys every family, AudioLDM (v1) included."""
    from front.families import family_refusal

    transform = family_refusal("audioldm", "transform", 0.0, "audio")
    assert transform is not None and transform.status_code == 400
    assert b'"loc":["model"]' in transform.body and b"choices: audioldm2" in transform.body
    too_long = family_refusal("audioldm", "generate", 31.0, "duration")
    assert too_long is not None and b'"loc":["duration"]' in too_long.body and b"at most 30 s" in too_long.body
    assert family_refusal("audioldm", "generate", 30.0, "duration") is None
    assert family_refusal("audioldm2", "generate", 600.0, "duration") is None
