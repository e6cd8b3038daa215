"""Jobs: long work submitted, watched, cancelled and fetched later, on top of the same runners."""

from __future__ import annotations

from jobs.store import JobStore, SQLiteStore
from settings import Settings


def open_store(settings: Settings) -> JobStore:
    """The store AUDIO_STUDIO_JOB_STORE names: SQLite in the data folder, or Redis."""
    if settings.job_store == "sqlite":
        return SQLiteStore(settings.job_data_dir)
    from jobs.redis_store import RedisStore  # only deployments with Redis need its client

    return RedisStore(settings.job_store, settings.job_data_dir, settings.job_inline_result_bytes)
