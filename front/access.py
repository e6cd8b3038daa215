"""Who may call the service: API keys, checked before anything else runs.

The keys file (`AUDIO_STUDIO_API_KEYS_FILE`) holds one `sha256:<hex digest>` per
line, optionally followed by a name; the keys themselves are never stored, and
only names reach logs and metrics. The file is read again when it changes (a
Kubernetes Secret update swaps it in place) or on SIGHUP, without a restart.

Health probes stay open; /metrics, the OpenAPI document and the UI each follow
a setting. Without a keys file every caller is `anonymous` and nothing is
checked (a local `bentoml serve`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from starlette.datastructures import Headers

from core.caller import ANONYMOUS, CALLER
from core.errors import error_response
from core.shutdown import on_startup
from front.asgi import Scope, reply

logger = logging.getLogger("bentoml.audio_studio")

UNAUTHENTICATED = "unauthenticated"
RECHECK_FILE_S = 1.0  # how often a request may look at the file's modification time
ENTRY = re.compile(r"sha256:(?P<digest>[0-9a-fA-F]{64})(?:\s+(?P<name>[A-Za-z0-9_.@-]{1,64}))?")

REQUESTS = Counter(
    "audio_studio_requests",
    "API requests by caller (the API key's name; anonymous without keys), route and status",
    ["key", "route", "status"],
)


@dataclass(frozen=True)
class KeyEntry:
    digest: bytes
    name: str


def parse_keys(text: str) -> list[KeyEntry]:
    """The valid entries of a keys file; a malformed line is skipped and logged by number, never by content."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = ENTRY.fullmatch(line)
        if match is None:
            logger.error("API keys file, line %d: not `sha256:<64 hex digits> [name]`; line ignored", number)
            continue
        digest = bytes.fromhex(match["digest"])
        entries.append(KeyEntry(digest, match["name"] or f"key-{match['digest'][:8].lower()}"))
    return entries


def hash_key(key: str) -> str:
    """The digest a keys file holds for `key` (also what the one-liner in docs/security.md prints)."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The valid keys, from the file; reloaded when the file changes or on demand (SIGHUP)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: list[KeyEntry] = []
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        self.reload()
        if not self._entries:
            logger.warning("API keys file %s holds no valid key: every API request will be refused", path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def reload(self) -> None:
        with self._lock:
            self._checked_at = time.monotonic()
            self._signature = self._stat()
            try:
                entries = parse_keys(self.path.read_text())
            except OSError as exc:
                logger.error("API keys file unreadable (%s): every API request is refused until it is back", exc)
                entries = []
            self._entries = entries
        logger.info("API keys loaded: %s", ", ".join(e.name for e in entries) or "none")

    def refresh_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < RECHECK_FILE_S:
            return
        self._checked_at = now
        if self._stat() != self._signature:
            self.reload()

    def name_of(self, key: str) -> str | None:
        """The name of the entry `key` matches, comparing every entry in constant time; None if none."""
        self.refresh_if_changed()
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry.name
        return found


def presented_key(headers: Headers) -> str | None:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


@dataclass(frozen=True)
class OpenPaths:
    """Which paths answer without a key: health always; the rest per setting."""

    always: tuple[str, ...] = ("/livez", "/readyz", "/healthz")
    metrics: bool = False
    docs: bool = True
    ui: bool = True

    def __contains__(self, path: object) -> bool:
        if path in self.always:
            return True
        if path == "/metrics":
            return self.metrics
        if path == "/docs.json":
            return self.docs
        if path in ("/", "/ui") or (isinstance(path, str) and path.startswith(("/static_content/", "/ui/"))):
            return self.ui  # the Swagger UI and the playground page (the API behind them needs a key)
        return False


class AccessGuard:
    """ASGI middleware: a 401 for a request without a valid key; the caller's name for the middlewares inside."""

    def __init__(self, app: Any, keys_file: Path | None, open_paths: OpenPaths, api_routes: set[str]) -> None:
        self.app = app
        self.keys = KeyRing(keys_file) if keys_file is not None else None
        self.open_paths = open_paths
        self.api_routes = api_routes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and self.keys is not None:
            return await self.app(scope, on_startup(receive, self.reload_on_sighup), send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.api_routes else None
        if self.keys is None or scope["path"] in self.open_paths:
            caller = ANONYMOUS if self.keys is None else UNAUTHENTICATED
        else:
            key = presented_key(Headers(scope=scope))
            name = self.keys.name_of(key) if key is not None else None
            if name is None:
                reason = "no API key" if key is None else "this API key is not valid"
                logger.info("%s %s: refused (%s)", scope["method"], scope["path"], reason)
                if route is not None:
                    REQUESTS.labels(key=UNAUTHENTICATED, route=route, status="401").inc()
                return await self.unauthorized(send, reason)
            caller = name
        scope[CALLER] = caller
        if route is None:
            return await self.app(scope, receive, send)

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                REQUESTS.labels(key=caller, route=route, status=str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)

    @staticmethod
    async def unauthorized(send: Any, reason: str) -> None:
        response = error_response(
            "unauthorized",
            f"{reason}; send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            headers={"WWW-Authenticate": 'Bearer realm="audio-studio"'},
        )
        await reply(send, response)

    def reload_on_sighup(self) -> None:
        assert self.keys is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.keys.reload)
