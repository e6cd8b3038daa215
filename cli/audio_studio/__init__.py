"""A Python client of the audio-studio HTTP API (HTTP only: httpx, no torch). Sync and async, every API
synchronously or as a job with progress, critiques streamed as they are written. Guide: docs/client.md."""

from audio_studio.asynchronous import AsyncClient, AsyncCritiqueStream, AsyncJob
from audio_studio.errors import ApiError, JobCancelled, JobFailed, ServerUnreachable
from audio_studio.results import Audio, Critique, JobStatus, Progress
from audio_studio.synchronous import Client, CritiqueStream, Job

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncCritiqueStream",
    "AsyncJob",
    "Audio",
    "Client",
    "Critique",
    "CritiqueStream",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobStatus",
    "Progress",
    "ServerUnreachable",
]
