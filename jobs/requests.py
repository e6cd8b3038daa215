"""A job's request as it was accepted, kept in the data folder until the job ends: every job runs from it, so a
job accepted before a restart runs after it as it would have.

What is kept: the request's JSON with its seed fixed (drawn at submission when not given, so every attempt makes the
same bytes), and each upload as it was sent, not decoded. An upload is hard-linked from BentoML's request folder
where both are on one file system (nothing written), compressed formats are smaller than their decoded samples, and
a job starts by decoding it with the synchronous route's own code; the cost is a second decode (a 30 s 44.1 kHz WAV:
about 10 ms) when the job starts. Queued jobs hold no decoded audio in memory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

REQUEST_FILE = "request.json"


class StoredRequest(BaseModel):
    """Which submission route accepted the job, and its request's JSON (uploads named by their kept files)."""

    job_id: str
    route: str
    body: str


def _durable_copy(source: Path, target: Path) -> None:
    """`source` at `target`, on disk: a hard link where both are on one file system, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    with open(target, "rb") as file:
        os.fsync(file.fileno())


def _write_durably(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class RequestFolder:
    """One folder per job under `folder`: its request.json and its uploads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _job_folder(self, job_id: str) -> Path:
        return self.folder / job_id

    async def keep(self, job_id: str, route: str, request: BaseModel) -> None:
        """Write `request` (a submission route's model) and its uploads for `job_id`, synced to disk."""

        def keep() -> None:
            folder = self._job_folder(job_id)
            folder.mkdir()
            kept: dict[str, Any] = {}
            for name in type(request).model_fields:
                value = getattr(request, name)
                if isinstance(value, Path):
                    kept[name] = self._keep_upload(folder, name, 0, value)
                elif isinstance(value, list) and value and all(isinstance(item, Path) for item in value):
                    kept[name] = [self._keep_upload(folder, name, i, item) for i, item in enumerate(value)]
            # Uploads as their kept paths: BentoML serialises a file field as the file's bytes.
            body = json.dumps({**request.model_dump(mode="json", exclude=set(kept)), **kept}, default=str)
            _write_durably(
                folder / REQUEST_FILE, StoredRequest(job_id=job_id, route=route, body=body).model_dump_json().encode()
            )
            _fsync_folder(folder)
            _fsync_folder(self.folder)

        await anyio.to_thread.run_sync(keep)

    @staticmethod
    def _keep_upload(folder: Path, field: str, index: int, upload: Path) -> Path:
        kept = folder / f"{field}-{index}{upload.suffix[:16]}"
        _durable_copy(upload, kept)
        return kept

    async def load(self, job_id: str) -> StoredRequest | None:
        """The job's request, or None if none was kept (a job accepted before requests were kept)."""

        def load() -> StoredRequest | None:
            try:
                return StoredRequest.model_validate_json((self._job_folder(job_id) / REQUEST_FILE).read_bytes())
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(load)

    async def job_ids(self) -> set[str]:
        """The jobs with a kept request (an interrupted submission leaves one without a record)."""
        return await anyio.to_thread.run_sync(lambda: {path.name for path in self.folder.iterdir() if path.is_dir()})

    async def drop(self, job_id: str) -> None:
        """The job ended (or was never accepted): its request and uploads go."""
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(self._job_folder(job_id), ignore_errors=True))
