"""What keeps this process's jobs current: every TICK_S their progress (asked of the runners), cancels asked on
other replicas, queue positions and heartbeats; every CLAIM_EVERY_S, the jobs of replicas that died (with Redis);
every EXPIRE_EVERY_S, the store's expiry of old results."""

from __future__ import annotations

import asyncio
import logging

from jobs.progress import follow
from jobs.records import fresh_since, now
from jobs.running import LocalJob, LocalJobs

logger = logging.getLogger("bentoml.audio_studio")

TICK_S = 0.5
HEARTBEAT_S = 5.0  # well under STALE_S (jobs/records.py): a live owner's jobs never read as dead
EXPIRE_EVERY_S = 60.0
CLAIM_EVERY_S = 2.0  # how soon a live replica takes over the jobs of one that died (after STALE_S)


class Upkeep:
    def __init__(self, local: LocalJobs) -> None:
        self.local = local

    async def loop(self) -> None:
        expired_at = claimed_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
                if loop.time() - claimed_at > CLAIM_EVERY_S:
                    claimed_at = loop.time()
                    stale = await self.local.store.claim_stale(self.local.instance, fresh_since())
                    await self.local.take_over(stale, "their replica stopped")
                if loop.time() - expired_at > EXPIRE_EVERY_S:
                    expired_at = loop.time()
                    await self.local.store.expire(now())
            except Exception:  # the loop outlives any one failure (a store or runner hiccup)
                logger.exception("jobs: upkeep iteration failed")

    async def tick(self) -> None:
        jobs = [local for local in list(self.local.jobs.values()) if local.record.active]
        await asyncio.gather(*(follow(runner, jobs) for runner in self.local.waiting))
        loop_time = asyncio.get_running_loop().time()
        for local in jobs:
            if await self.local.store.cancel_requested(local.id):
                self.local.cancel(local.id)
                continue
            self._place_in_queue(local)
            if local.dirty or loop_time - local.saved_at > HEARTBEAT_S:
                local.dirty = False
                await self.local.save(local)

    def _place_in_queue(self, local: LocalJob) -> None:
        queue = self.local.waiting[local.record.runner]
        if local.id in queue:
            position = queue.index(local.id) + 1
            local.update(progress=local.record.status.progress.model_copy(update={"queue_position": position}))
