"""The playground page at /ui: a static page (HTML, CSS, a little JavaScript, no build step) that calls the
public job API like any client, under a Content-Security-Policy that allows nothing from another origin and no
framing. Off with AUDIO_STUDIO_PLAYGROUND=false."""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles

from front.asgi import WithHeaders, content_security_policy

PAGE_DIR = Path(__file__).resolve().parent / "playground"
PATH = "/ui"
# Its own script and styles only; audio plays from blob: URLs; it calls this origin's API and nothing else.
POLICY = content_security_policy(
    script_src="'self'",
    style_src="'self'",
    img_src="'self' data:",
    media_src="'self' blob:",
    connect_src="'self' blob:",
)


def playground_app() -> WithHeaders:
    return WithHeaders(StaticFiles(directory=PAGE_DIR, html=True), {"Content-Security-Policy": POLICY})
