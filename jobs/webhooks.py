"""Webhooks: where a job's events may be sent, and how they are signed.

A job names `webhook` (a URL) and `webhook_events`; the destination must be allowed
(`AUDIO_STUDIO_WEBHOOK_ALLOWED_HOSTS`: host names, `*.domain` for its subdomains, `*` for any public host).
Loopback, link-local, private and other special addresses are refused unless the host is listed by itself (never
through a wildcard), both at submission and at each delivery, where the name is resolved again (a DNS answer that
changed to a private address is refused then). An address must be written in its usual form: `0x7f000001` or
`127.1` are refused, never read as 127.0.0.1.

Signatures follow Standard Webhooks (https://www.standardwebhooks.com): `webhook-signature: v1,<base64 of
HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")>`, with the secret written `whsec_<base64>`.
Secrets come from `AUDIO_STUDIO_WEBHOOK_SECRETS_FILE`: one `<API key name> whsec_...` per line, `*` for the
secret of every caller without one of its own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jobs.errors import WebhookRefused
from jobs.records import JobWebhook, WebhookEvent
from settings import Settings

logger = logging.getLogger("bentoml.audio_studio")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SECRET_LINE = re.compile(r"(?P<name>\*|[A-Za-z0-9_.@-]{1,64})\s+whsec_(?P<secret>[A-Za-z0-9+/=]{16,})")
ANY_CALLER = "*"
RESOLVE_TIMEOUT_S = 5.0
EVENT_ORDER: list[WebhookEvent] = ["start", "progress", "completed"]


class DestinationRefused(ValueError):
    """Why a webhook URL may not be used (its message names no server detail)."""


def special(address: Address) -> bool:
    """Loopback, link-local, private, or any address that is not a public unicast one."""
    return not address.is_global or address.is_multicast


def literal_address(host: str) -> Address | None:
    """`host` as an IP address if it is one in its usual form; DestinationRefused for other numeric forms."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        socket.inet_aton(host)  # 0x7f000001, 127.1, 017700000001: what C resolvers read as addresses
    except OSError:
        return None
    raise DestinationRefused(f"webhook: write the address {host!r} in its usual dotted form")


@dataclass(frozen=True)
class Destinations:
    """The allowed webhook hosts (`AUDIO_STUDIO_WEBHOOK_ALLOWED_HOSTS`); webhooks are off when there are none."""

    allowed: tuple[str, ...]

    @property
    def on(self) -> bool:
        return bool(self.allowed)

    def listed(self, host: str) -> bool:
        """Listed by itself (a special address needs that) or through a wildcard."""
        return host in self.allowed

    def matched(self, host: str) -> bool:
        if self.listed(host) or "*" in self.allowed:
            return True
        return any(entry.startswith("*.") and host.endswith(entry[1:]) for entry in self.allowed)

    def check(self, url: str) -> str:
        """The URL's host, once it passes every rule that needs no DNS; DestinationRefused naming the rule."""
        if not self.on:
            raise DestinationRefused("webhook: webhooks are off on this server (no AUDIO_STUDIO_WEBHOOK_ALLOWED_HOSTS)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DestinationRefused("webhook: must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise DestinationRefused("webhook: must not carry credentials")
        host = parts.hostname.lower().rstrip(".")
        if not self.matched(host):
            raise DestinationRefused(f"webhook: the host {host!r} is not among this server's allowed webhook hosts")
        address = literal_address(host)
        if address is not None:
            self.check_address(host, address)
        return host

    def check_address(self, host: str, address: Address) -> None:
        if special(address) and not self.listed(host):
            raise DestinationRefused(
                f"webhook: {host!r} is a loopback, link-local or private address; it must be listed by itself "
                "in the allowed webhook hosts"
            )

    async def check_resolved(self, url: str) -> None:
        """Every rule, on the addresses the URL's host resolves to now (at submission, and again at each delivery:
        DNS may have changed since)."""
        host = self.check(url)
        if literal_address(host) is not None:
            return
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            raise DestinationRefused(f"webhook: the host {host!r} does not resolve") from exc
        for info in found:
            self.check_address(host, ipaddress.ip_address(str(info[4][0]).split("%")[0]))


@dataclass(frozen=True)
class WebhookSettings:
    destinations: Destinations
    secrets: Secrets
    retry_s: float  # how long an event is retried before it is given up

    async def subscription(self, caller: str, url: str, events: list[WebhookEvent]) -> JobWebhook:
        """The job's webhook, checked at submission; WebhookRefused says why it may not be used."""
        try:
            await self.destinations.check_resolved(url)
        except DestinationRefused as refused:
            raise WebhookRefused(str(refused)) from None
        if self.secrets.of(caller) is None:
            raise WebhookRefused("webhook: this server has no signing secret for this API key")
        return JobWebhook(url=url, events=sorted(set(events), key=EVENT_ORDER.index))


def webhook_settings(settings: Settings) -> WebhookSettings | None:
    """Webhooks as configured; None (off) without allowed hosts."""
    if not settings.webhook_allowed_hosts:
        return None
    hosts = tuple(host.lower().rstrip(".") for host in settings.webhook_allowed_hosts)
    if settings.webhook_secrets_file is None:
        logger.warning("webhooks: no AUDIO_STUDIO_WEBHOOK_SECRETS_FILE, so every job's webhook is refused")
    logger.info("webhooks: on, to %s", ", ".join(hosts))
    return WebhookSettings(Destinations(hosts), Secrets(settings.webhook_secrets_file), settings.webhook_retry_s)


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value."""
    digest = hmac.new(secret, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def parse_secrets(text: str) -> dict[str, bytes]:
    """API key name (or `*`) -> secret bytes; a malformed line is skipped and logged by number, never by content."""
    secrets: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = SECRET_LINE.fullmatch(line)
        if match is None:
            logger.error("webhook secrets file, line %d: not `<key name or *> whsec_<base64>`; line ignored", number)
            continue
        try:
            secrets[match["name"]] = base64.b64decode(match["secret"], validate=True)
        except ValueError:
            logger.error("webhook secrets file, line %d: the secret is not base64; line ignored", number)
    return secrets


class Secrets:
    """The signing secrets, from their file, read again when it changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._signature: tuple[int, int] | None = None
        self._secrets: dict[str, bytes] = {}

    def of(self, caller: str) -> bytes | None:
        """The caller's secret, or the global one; None if neither is set."""
        self._refresh()
        return self._secrets.get(caller, self._secrets.get(ANY_CALLER))

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            stat = self.path.stat()
            signature = (stat.st_ino, stat.st_mtime_ns)
            if signature != self._signature:
                self._secrets, self._signature = parse_secrets(self.path.read_text()), signature
        except OSError as exc:
            logger.error("webhook secrets file unreadable (%s): webhooks are refused until it is back", exc)
            self._secrets, self._signature = {}, None
