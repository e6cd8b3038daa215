"""A runner on SIGTERM: its server stops taking calls at once (core/shutdown.py), and whatever the runner still
runs when the grace ends is stopped at its next step or token, so its callers get an answer (503) and the process
exits within the grace instead of finishing work nobody will collect."""

from __future__ import annotations

import asyncio
import logging

from core.shutdown import on_sigterm
from runners.cancellation import CancelledJobs

logger = logging.getLogger("bentoml.audio_studio")


def stop_everything_after_the_grace(runner: str, cancelled: CancelledJobs, grace_s: float) -> None:
    """Call from the runner's `__init__`: on the server's loop, once the server has its own SIGTERM handler.

    A runner built outside a server (in-process tests, scripts) has no loop running and no server to stop: it keeps
    the default SIGTERM behaviour.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    def stop_everything() -> None:
        logger.warning("%s runner: the shutdown grace is over; stopping every job it still runs", runner)
        cancelled.everything()

    def after_sigterm() -> None:
        logger.info("%s runner: SIGTERM; jobs it runs get %g s", runner, grace_s)
        loop.call_later(grace_s, stop_everything)

    on_sigterm(after=after_sigterm)
