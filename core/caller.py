"""Who is calling: the access guard (front/access.py) names the caller in the ASGI scope, and whatever answers
inside it (admission, the routes, the job API, which gives each job to its caller) reads the name there."""

from __future__ import annotations

CALLER = "audio_studio.caller"  # the scope key of the caller's name: the API key's, or ANONYMOUS without keys
ANONYMOUS = "anonymous"
