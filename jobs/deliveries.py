"""Webhook deliveries: at least once, retried with exponential backoff for a bounded time, kept on disk.

Each event to deliver is a file in the data folder (`webhooks/<delivery id>.<owner>.json`, fsynced) from the
moment it is due until it is delivered or given up, so deliveries survive a restart. Its owner, the front process
that delivers it, touches its files while it lives; files untouched for STALE_S (a process that died, or every
file at the start of the one SQLite process) are claimed by renaming them to the claimer's name, which one
process alone can do. Every attempt's outcome goes to the job's status (`webhook.attempts`). Redirects are not
followed; the destination is checked again, with a fresh DNS answer, before each attempt (jobs/webhooks.py).
Events of one job may arrive out of order when one is retried: receivers order them by the status they carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from pydantic import BaseModel

from jobs.records import STALE_S, JobStatus, WebhookAttempt, WebhookEvent, now
from jobs.webhooks import DestinationRefused, Destinations, Secrets, sign

logger = logging.getLogger("bentoml.audio_studio")

SEND_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 300.0
TOUCH_EVERY_S = 5.0
AT_ONCE = 8  # deliveries in flight per process
USER_AGENT = "audio-studio-webhooks/1"
EVENT_HEADER = "audio-studio-event"  # start, progress or completed: the body is the status alone

OnAttempt = Callable[[str, WebhookAttempt], Awaitable[None]]


class Delivery(BaseModel):
    """One event of one job, to deliver."""

    id: str  # the `webhook-id`: the same on every attempt
    job_id: str
    caller: str
    url: str
    event: WebhookEvent
    body: str  # the job's status when the event happened (JSON)
    attempts: int = 0
    next_at: datetime
    give_up_at: datetime


def backoff_s(attempts: int) -> float:
    """1 s after the first failure, then doubling, at most MAX_BACKOFF_S."""
    return min(MAX_BACKOFF_S, 2.0 ** (attempts - 1))


class Outbox:
    """The deliveries not yet done, as files in `folder`."""

    def __init__(self, folder: Path, owner: str) -> None:
        self.folder = folder
        self.owner = owner

    def path(self, delivery_id: str, owner: str | None = None) -> Path:
        return self.folder / f"{delivery_id}.{owner or self.owner}.json"

    def keep(self, delivery: Delivery) -> None:
        """Write (or rewrite) the delivery, durably, as this process's."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(delivery.id)
        partial = path.with_suffix(".partial")
        with partial.open("w") as file:
            file.write(delivery.model_dump_json())
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)

    def drop(self, delivery: Delivery) -> None:
        self.path(delivery.id).unlink(missing_ok=True)

    def touch_own(self) -> None:
        for path in self.folder.glob(f"*.{self.owner}.json"):
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)

    def claim(self, older_than_s: float) -> list[Delivery]:
        """Deliveries of other owners untouched for `older_than_s`, renamed to this process's (one claimer wins)."""
        if not self.folder.is_dir():
            return []
        claimed = []
        cutoff = time.time() - older_than_s
        for path in self.folder.glob("*.json"):
            delivery_id, owner, _ = path.name.rsplit(".", 2)
            try:
                if owner == self.owner or path.stat().st_mtime > cutoff:
                    continue
                path.rename(self.path(delivery_id))
                os.utime(self.path(delivery_id))
                claimed.append(Delivery.model_validate_json(self.path(delivery_id).read_text()))
            except FileNotFoundError:
                continue  # another process claimed it first, or its owner finished it
            except ValueError:
                logger.error("webhooks: an unreadable delivery file was removed (%s)", delivery_id)
                self.path(delivery_id).unlink(missing_ok=True)
        return claimed


class Deliverer:
    def __init__(
        self, outbox: Outbox, destinations: Destinations, secrets: Secrets, retry_s: float, on_attempt: OnAttempt
    ) -> None:
        self.outbox = outbox
        self.destinations = destinations
        self.secrets = secrets
        self.retry_s = retry_s
        self.on_attempt = on_attempt
        self.due: dict[str, Delivery] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    async def add(self, job_id: str, caller: str, url: str, event: WebhookEvent, status: JobStatus) -> None:
        """A job's event happened: keep its delivery, then send it soon."""
        created = now()
        delivery = Delivery(
            id=f"msg_{job_id}_{event}_{created.timestamp():.6f}".replace(".", ""),
            job_id=job_id,
            caller=caller,
            url=url,
            event=event,
            body=status.model_dump_json(),
            next_at=created,
            give_up_at=created + timedelta(seconds=self.retry_s),
        )
        await asyncio.to_thread(self.outbox.keep, delivery)
        self.due[delivery.id] = delivery
        self._wake.set()

    async def loop(self, resume_all: bool) -> None:
        """Send what is due, for ever; claim orphaned deliveries (all of them at once if `resume_all`)."""
        upkept_at = 0.0
        first = True
        while True:
            clock = time.monotonic()
            try:
                if clock - upkept_at > TOUCH_EVERY_S:  # one pass: claim orphans, then renew this process's files
                    upkept_at = clock
                    orphans = await asyncio.to_thread(self.outbox.claim, 0.0 if first and resume_all else STALE_S)
                    first = False
                    for delivery in orphans:
                        self.due[delivery.id] = delivery
                    if orphans:
                        logger.info("webhooks: %d delivery(ies) resumed", len(orphans))
                    await asyncio.to_thread(self.outbox.touch_own)
                self._send_due()
            except Exception:
                logger.exception("webhooks: delivery loop iteration failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)

    def _send_due(self) -> None:
        stamp = now()
        for delivery in sorted(self.due.values(), key=lambda d: d.next_at):
            if len(self._sending) >= AT_ONCE or delivery.next_at > stamp:
                break
            del self.due[delivery.id]
            task = asyncio.get_running_loop().create_task(self._attempt(delivery))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _attempt(self, delivery: Delivery) -> None:
        delivery.attempts += 1
        status_code, error = await self._send(delivery)
        delivered = status_code is not None and 200 <= status_code < 300
        retry_at = now() + timedelta(seconds=backoff_s(delivery.attempts))
        again = not delivered and retry_at <= delivery.give_up_at and not isinstance(error, DestinationRefused)
        attempt = WebhookAttempt(
            event=delivery.event,
            webhook_id=delivery.id,
            attempt=delivery.attempts,
            at=now(),
            status_code=status_code,
            error=None if error is None else str(error),
            delivered=delivered,
            next_attempt_at=retry_at if again else None,
        )
        level = logging.INFO if delivered else logging.WARNING
        outcome = "delivered" if delivered else ("to retry" if again else "given up")
        logger.log(
            level,
            "webhook %s (job %s, %s) attempt %d: %s, %s",
            delivery.id,
            delivery.job_id,
            delivery.event,
            delivery.attempts,
            status_code or error,
            outcome,
        )
        if again:
            delivery.next_at = retry_at
            await asyncio.to_thread(self.outbox.keep, delivery)
            self.due[delivery.id] = delivery
        else:
            await asyncio.to_thread(self.outbox.drop, delivery)
        try:
            await self.on_attempt(delivery.job_id, attempt)
        except Exception:
            logger.exception("webhooks: the attempt could not be shown in job %s's status", delivery.job_id)

    async def _send(self, delivery: Delivery) -> tuple[int | None, Exception | None]:
        secret = self.secrets.of(delivery.caller)
        if secret is None:
            return None, DestinationRefused("no webhook signing secret for this API key")
        try:
            await self.destinations.check_resolved(delivery.url)
        except DestinationRefused as refused:
            return None, refused
        body = delivery.body.encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, delivery.id, timestamp, body),
            EVENT_HEADER: delivery.event,
        }
        try:
            async with httpx.AsyncClient(follow_redirects=False, timeout=SEND_TIMEOUT_S, trust_env=False) as client:
                answer = await client.post(delivery.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, ConnectionError(f"{type(exc).__name__}: no answer from the receiver")
        return answer.status_code, None
