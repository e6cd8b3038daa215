"""Which weights a runner loads, decided in one place.

`full` declares the published checkpoint as a `bentoml.models.HuggingFaceModel`
on the runner class: `bentoml build` on a connected machine then copies the
weights into the Bento, and `bentoml serve` resolves them from the Hugging Face
cache. `tiny` builds random-weight models of the same classes into a local
folder once (seconds, no network) and hands back that folder. `random` hands
back a folder of random weights written beforehand under the checkpoint's name
(bench/fullsize.py --write-random: the published architectures at full size, so
a GPU benchmark serves what the real weights cost). Whichever, the runner gets
a directory and loads it with `from_pretrained`.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bentoml.models import HuggingFaceModel

from registry import AUDIOLDM, AUDIOLDM2, MUSIC_FLAMINGO
from settings import Profile, Settings

logger = logging.getLogger("bentoml.audio_studio")


class WeightsUnavailable(SystemExit):
    """The `full` profile's checkpoint cannot be reached: start-up stops, never falls back to random weights.

    A SystemExit, so that the process prints the instructions and exits with status 1 wherever it is raised,
    without a traceback: in `bentoml serve` itself, which resolves every model a service declares before any
    code of ours runs (`server_on_deployment`), as well as in a runner.
    """


@dataclass(frozen=True)
class Checkpoint:
    """A loadable model folder and the name it is reported under."""

    path: Path
    model_id: str
    profile: Profile


def unavailable(model_id: str, cause: Exception) -> WeightsUnavailable:
    """What failed and what to do about it, in a few lines: the hub's own traceback is 130 lines of no help."""
    reason = (str(cause).strip().splitlines() or [""])[0]
    return WeightsUnavailable(
        f"audio-studio cannot start: no weights of {model_id} are reachable (profile 'full', the default).\n"
        f"  cause: {type(cause).__name__}: {reason}\n"
        "  To serve them: run where huggingface.co is reachable (with HF_TOKEN if the model is gated), download "
        f"them first (`hf download {model_id}`), or serve a Bento made by `bentoml build`, which carries them.\n"
        "  For a demo with random weights and no downloads: AUDIO_STUDIO_PROFILE=tiny bentoml serve service:AudioStudio"
    )


class HubWeights(HuggingFaceModel):
    """A published checkpoint as BentoML declares it, whose resolving fails with instructions."""

    def resolve(self, base_path: str | None = None) -> str:
        try:
            return super().resolve(base_path)
        except Exception as exc:  # huggingface_hub raises many kinds; all mean "not reachable"
            raise unavailable(self.model_id, exc) from None


def declare_weights(settings: Settings, model_id: str) -> HuggingFaceModel | None:
    """The class attribute a runner declares; `None` in the tiny profile so nothing touches the hub."""
    if settings.profile is Profile.FULL:
        return HubWeights(model_id)
    return None


def full_checkpoint(weights: HuggingFaceModel | None, model_id: str) -> Checkpoint:
    """The published checkpoint's folder (profile `full`), from the weights declared on the runner class."""
    if weights is None:
        raise WeightsUnavailable("profile 'full' needs the weights declared on the runner class")
    return Checkpoint(path=Path(weights.resolve()), model_id=model_id, profile=Profile.FULL)


def random_weights_folder(root: Path, model_id: str) -> Path:
    """Where profile `random` reads `model_id`'s folder (and bench/fullsize.py --write-random writes it)."""
    return root / model_id


def random_checkpoint(settings: Settings, model_id: str) -> Checkpoint:
    """Profile `random`: `model_id`'s random-weight folder, written beforehand; a missing one stops start-up."""
    path = random_weights_folder(settings.random_model_dir, model_id)
    if not path.is_dir():
        raise WeightsUnavailable(
            f"audio-studio cannot start: profile 'random' has no model folder {path}.\n"
            f"  Write one first: python bench/fullsize.py --write-random {settings.random_model_dir} "
            "(full size; add --smoke for tiny models)"
        )
    return Checkpoint(path=path, model_id=model_id, profile=Profile.RANDOM)


def profile_checkpoint(
    settings: Settings, weights: HuggingFaceModel | None, model_id: str, tiny: Callable[[], Checkpoint]
) -> Checkpoint:
    """`model_id`'s folder for the configured profile: published, `tiny` (built on first use) or `random`."""
    if settings.profile is Profile.TINY:
        return tiny()
    if settings.profile is Profile.RANDOM:
        return random_checkpoint(settings, model_id)
    return full_checkpoint(weights, model_id)


def audioldm2_checkpoint(
    settings: Settings, weights: HuggingFaceModel | None, checkpoint: str | None = None
) -> Checkpoint:
    """The AudioLDM2 folder for the configured profile; `checkpoint`: the published one, by default the runner's
    setting."""

    def tiny() -> Checkpoint:
        from models import local_tokenizers, tiny_audioldm2

        fingerprint = builder_fingerprint(tiny_audioldm2, local_tokenizers)
        return ensure_tiny(settings, "audioldm2", fingerprint, tiny_audioldm2.save_tiny_audioldm2)

    return profile_checkpoint(settings, weights, checkpoint or AUDIOLDM2.settings.checkpoint, tiny)


def audioldm_checkpoint(settings: Settings, weights: HuggingFaceModel | None) -> Checkpoint:
    """The AudioLDM (v1) folder for the configured profile."""

    def tiny() -> Checkpoint:
        from models import local_tokenizers, tiny_audioldm, tiny_audioldm2

        fingerprint = builder_fingerprint(tiny_audioldm, tiny_audioldm2, local_tokenizers)
        return ensure_tiny(settings, "audioldm", fingerprint, tiny_audioldm.save_tiny_audioldm)

    return profile_checkpoint(settings, weights, AUDIOLDM.settings.checkpoint, tiny)


def music_flamingo_checkpoint(
    settings: Settings, weights: HuggingFaceModel | None, checkpoint: str | None = None
) -> Checkpoint:
    """The Music Flamingo folder for the configured profile and checkpoint (tiny: same class and limits);
    `checkpoint`: the published one, by default the runner's setting."""
    checkpoint = checkpoint or MUSIC_FLAMINGO.settings.checkpoint

    def tiny() -> Checkpoint:
        from models import local_tokenizers, tiny_music_flamingo

        variant = tiny_music_flamingo.TINY_LAYOUT_OF[checkpoint]
        fingerprint = builder_fingerprint(tiny_music_flamingo, local_tokenizers)
        return ensure_tiny(
            settings, variant, fingerprint, lambda path: tiny_music_flamingo.save_tiny_music_flamingo(path, variant)
        )

    return profile_checkpoint(settings, weights, checkpoint, tiny)


def builder_fingerprint(*modules: ModuleType) -> str:
    """Hash of the builder code: changing how a tiny model is built invalidates its cache."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:12]


def ensure_tiny(settings: Settings, name: str, fingerprint: str, save: Callable[[Path], None]) -> Checkpoint:
    """Build the tiny model `name` once into the cache folder; concurrent builders are safe.

    Each builder writes into its own temporary folder and renames it into place,
    so a reader never sees a half-written model.
    """
    target = settings.tiny_model_dir / f"{name}-{fingerprint}"
    if not target.is_dir():
        settings.tiny_model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=settings.tiny_model_dir))
        try:
            save(staging)
            staging.rename(target)
            logger.info("built tiny model %s in %s", name, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another builder
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Checkpoint(path=target, model_id=f"audio-studio/tiny-{name}", profile=Profile.TINY)
