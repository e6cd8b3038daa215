"""The playground page at /ui: a static page (HTML, CSS, a little JavaScript, no build step) that calls the
public job API like any client. Off with AUDIO_STUDIO_PLAYGROUND=false."""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles

PAGE_DIR = Path(__file__).resolve().parent / "playground"
PATH = "/ui"


def playground_app() -> StaticFiles:
    return StaticFiles(directory=PAGE_DIR, html=True)
