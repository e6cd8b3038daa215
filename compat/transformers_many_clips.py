"""Music Flamingo processors that accept any number of clips per conversation.

What it changes: models/music_flamingo.py loads the checkpoint's processor class through
`many_clips_processor_class`, a subclass whose `validate_inputs` skips the class's own check and keeps only
`ProcessorMixin.validate_inputs` (as many `<sound>` placeholders as clips overall).

Why: transformers' `AudioFlamingo3Processor` and `MusicFlamingoProcessor` reject `len(text) != len(audio)`
("Got 1 text but 2 audios; they must match 1:1"), which forbids both two clips in one conversation (a
performance and its reference) and text-only rows next to audio rows in a batch. The model consumes the audio
spans in order whatever rows they sit in. No upstream issue. Checked with transformers 5.23.0 only.
"""

from __future__ import annotations

import functools
from typing import Any

from transformers import ProcessorMixin

from compat import Patch

PATCH = Patch(
    name="transformers_many_clips",
    library="transformers",
    checked="==5.23.0",
    why="the Music Flamingo processors refuse more than one clip per conversation",
)


class _ManyClipsPerConversation:
    """Processor mixin: only the generic check of the inputs stays."""

    def validate_inputs(self, audio: Any = None, text: Any = None, **kwargs: Any) -> None:
        ProcessorMixin.validate_inputs(self, audio=audio, text=text, **kwargs)  # type: ignore[arg-type]


@functools.cache
def many_clips_processor_class(base: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`base` with the mixin above; cached so each base gets one subclass."""
    return type(f"ManyClips{base.__name__}", (_ManyClipsPerConversation, base), {})
