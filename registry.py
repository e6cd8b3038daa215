"""The model families this deployment runs: one entry each, and everything per runner derives from it.

A family is an engine in `models/`, a runner service in `runners/` and an entry here. The entry gives the
runner its one name (metric labels, job slots, logs, the `AUDIO_STUDIO_<NAME>_*` settings), its settings
class, its checkpoints and the front routes that queue on it. Light on purpose: the front, the runners, jobs
and the docs generator import it without loading a model library.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, get_type_hints

from settings import (
    SETTINGS,
    AudioLDM2Settings,
    Checked,
    DiffusionSettings,
    MusicFlamingoSettings,
    Profile,
    RunnerSettings,
    Settings,
    allowed_text,
    default_text,
    read_fields,
)

Feature = Literal["generate", "transform", "edit", "long_form", "clap_ranking", "critique"]


@dataclass(frozen=True)
class Family:
    name: str  # the runner's one name, everywhere
    title: str  # for people: start-up lines, OpenAPI text, /models
    checkpoints: tuple[str, ...]  # the published ones it serves; the first is the default
    settings_class: type[RunnerSettings]
    features: frozenset[Feature]
    sample_rate: int
    max_seconds: float | None = None  # the longest clip it makes or takes; None: the service's limit
    routes: tuple[str, ...] = ()  # the front's routes whose admission room is this runner's
    optional: bool = False  # deployed only when enabled (by default with the tiny profile only)

    @property
    def env_prefix(self) -> str:
        return "AUDIO_STUDIO_" + self.name.upper().replace("-", "_") + "_"

    def read_settings(self, environ: dict[str, str] | None = None) -> RunnerSettings:
        """This family's runner settings from the environment, the checkpoint checked against the family's."""
        settings = read_fields(self.settings_class, self.env_prefix, environ, checkpoint=self.checkpoints[0])
        if settings.checkpoint not in self.checkpoints:
            raise ValueError(
                f"{self.env_prefix}CHECKPOINT={settings.checkpoint!r}: must be one of {', '.join(self.checkpoints)}"
            )
        if settings.enabled is False and not self.optional:
            raise ValueError(f"{self.env_prefix}ENABLED=false: the {self.title} runner cannot be turned off")
        return settings

    @property
    def deployed(self) -> bool:
        """Whether this deployment runs the family's runner."""
        enabled = self.settings.enabled
        return enabled if enabled is not None else not self.optional or SETTINGS.profile is Profile.TINY

    @property
    def settings(self) -> RunnerSettings:
        """As read at start-up (settings never change in a running process)."""
        return RUNNER_SETTINGS[self.name]


AUDIOLDM2 = Family(
    name="audioldm2",
    title="AudioLDM2",
    checkpoints=("cvssp/audioldm2", "cvssp/audioldm2-large", "cvssp/audioldm2-music"),
    settings_class=AudioLDM2Settings,
    features=frozenset({"generate", "transform", "edit", "long_form", "clap_ranking"}),
    sample_rate=16_000,
    routes=(
        "/generate",
        "/generate/json",
        "/transform",
        "/transform/json",
        "/edit",
        "/edit/json",
        "/v1/audio/generate",
    ),
)
AUDIOLDM = Family(
    name="audioldm",
    title="AudioLDM",
    checkpoints=("cvssp/audioldm-s-full-v2", "cvssp/audioldm-m-full", "cvssp/audioldm-l-full"),
    settings_class=DiffusionSettings,
    features=frozenset({"generate"}),  # why not the others: models/audioldm.py
    sample_rate=16_000,
    max_seconds=30.0,  # one latent
    optional=True,
)
MUSIC_FLAMINGO = Family(
    name="music-flamingo",
    title="Music Flamingo",
    checkpoints=("nvidia/music-flamingo-hf", "nvidia/music-flamingo-2601-hf", "nvidia/music-flamingo-think-2601-hf"),
    settings_class=MusicFlamingoSettings,
    features=frozenset({"critique"}),
    sample_rate=16_000,
    routes=("/critique", "/v1/chat/completions"),
)
FAMILIES: tuple[Family, ...] = (AUDIOLDM2, AUDIOLDM, MUSIC_FLAMINGO)
GENERATORS: tuple[Family, ...] = tuple(family for family in FAMILIES if "generate" in family.features)
RUNNER_SETTINGS: dict[str, RunnerSettings] = {family.name: family.read_settings() for family in FAMILIES}


def setting_names() -> set[str]:
    """Every environment variable the service reads."""
    names = {"AUDIO_STUDIO_" + spec.name.upper() for spec in fields(Settings)}
    for family in FAMILIES:
        names |= {family.env_prefix + spec.name.upper() for spec in fields(family.settings_class)}
    return names


def configuration_markdown() -> str:
    """docs/configuration.md, from the settings classes (tests/unit/test_configuration_doc.py keeps it fresh)."""
    lines = [
        "# Configuration",
        "",
        "Generated from `settings.py` and `registry.py` by `python -m registry > docs/configuration.md`; do not",
        "edit by hand. Every setting is an environment variable, read once at start-up; a value out of its range",
        "or choices stops the service with a message naming the variable.",
        "",
    ]

    def table(title: str, cls: type[Checked], prefix: str, checkpoints: tuple[str, ...] = ()) -> None:
        hints = get_type_hints(cls)
        lines.extend([f"## {title}", "", "| variable | default | allowed | what it does |", "|---|---|---|---|"])
        for spec in fields(cls):
            default, allowed = default_text(spec), allowed_text(spec, hints[spec.name])
            if spec.name == "checkpoint":
                default, allowed = checkpoints[0], ", ".join(checkpoints)
            doc = spec.metadata["doc"].replace("|", "\\|")
            lines.append(f"| `{prefix}{spec.name.upper()}` | `{default}` | {allowed} | {doc} |")
        lines.append("")

    table("Service", Settings, "AUDIO_STUDIO_")
    for family in FAMILIES:
        table(f"{family.title} runner (`{family.name}`)", family.settings_class, family.env_prefix, family.checkpoints)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(configuration_markdown(), end="")
