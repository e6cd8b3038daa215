"""The API docs page at `/`: Swagger UI over the published document, with no third-party script.

BentoML's stock page loads Google Tag Manager (and its Swagger UI asks validator.swagger.io for a badge) on the
origin where users type API keys and where the playground keeps them. This page is ours: Swagger UI's own files
from the installed BentoML package (BentoML serves them under `/static_content/`), a configuration script inline
and pinned by its hash in the page's Content-Security-Policy, which allows nothing from another origin and no
framing.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from front.asgi import Scope, content_security_policy

# Swagger UI reads the published document (front/openapi.py); no online validator, no top bar to load another.
CONFIGURATION = (
    'window.ui = SwaggerUIBundle({url: "./docs.json", dom_id: "#swagger-ui", deepLinking: true, '
    'presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout", validatorUrl: null});'
)
PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>audio-studio API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="./static_content/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="./static_content/swagger-ui-bundle.js"></script>
  <script>{CONFIGURATION}</script>
</body>
</html>
"""


def script_hash(source: str) -> str:
    """A CSP source that allows exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Swagger UI styles its elements inline; its answers to "Try it out" come from this origin.
POLICY = content_security_policy(
    script_src=f"'self' {script_hash(CONFIGURATION)}",
    style_src="'self' 'unsafe-inline'",
    img_src="'self' data:",
    connect_src="'self'",
)


class DocsPage:
    """ASGI middleware: `GET /` answers the page (in place of BentoML's); all else passes through."""

    PATH = "/"

    def __init__(self, app: Any) -> None:
        self.app = app
        self.body = PAGE.encode()
        self.headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(self.body)).encode()),
            (b"content-security-policy", POLICY.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body if scope["method"] == "GET" else b""})
