"""The job routes in the published OpenAPI document: service.py hands `document_jobs` to front/openapi.py, which
calls it after fixing the synchronous routes.

BentoML documents the submissions (`POST /jobs/generate`, ...) from their signatures like every API; here they
get the synchronous routes' request bodies (examples included), their 202 answer and queue-cap 429. The routes
with a job id in the path are a mounted Starlette app, which BentoML does not document: they are added here.
"""

from __future__ import annotations

import copy
from typing import Any

from jobs.records import JobStatus
from schemas import AudioFormat

SUBMISSIONS = {
    "/jobs/generate": "/generate",
    "/jobs/generate/json": "/generate/json",
    "/jobs/transform": "/transform",
    "/jobs/transform/json": "/transform/json",
    "/jobs/edit": "/edit",
    "/jobs/edit/json": "/edit/json",
    "/jobs/critique": "/critique",
}
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "The id the submission answered with.",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
SCHEMA_REF = "#/components/schemas/{}"


def status_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": SCHEMA_REF.format("JobStatus")}}}


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format("ErrorResponse")}}},
    }
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
NOT_FOUND = "No such job, or not one this API key submitted (`kind`: `not_found`)."
GONE = "The job's result passed its retention time (`AUDIO_STUDIO_JOB_RETENTION_S`) (`kind`: `gone`)."


def document_jobs(doc: dict[str, Any], schemas: dict[str, Any], keyed: bool) -> None:
    """Add the job model and routes to `doc` (after the synchronous routes were fixed)."""
    status_schema = JobStatus.model_json_schema(ref_template=SCHEMA_REF.replace("{}", "{model}"))
    for name, schema in status_schema.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas["JobStatus"] = status_schema
    paths = doc.setdefault("paths", {})
    for path, synchronous in SUBMISSIONS.items():
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        operation["requestBody"] = copy.deepcopy(paths[synchronous]["post"]["requestBody"])
        responses = operation["responses"]
        responses.pop("200", None)
        responses["202"] = {
            "description": f"Queued: the job's status. Its result will be what `{synchronous}` answers.",
            "headers": {
                "Location": {"description": "The job's status URL.", "required": True, "schema": {"type": "string"}}
            },
            "content": status_content(),
        }
        responses["429"] = error(
            "The job queue is full (its count of jobs or its bytes of decoded uploads), or this API key has its "
            "limit of jobs queued or running"
            + (", or it is over its request rate" if keyed else "")
            + " (`kind`: `rate_limited`).",
            RETRY_AFTER,
        )
        operation["responses"] = dict(sorted(responses.items()))
        operation["tags"] = ["Jobs"]
    result_content = {
        **{fmt.media_type: {"schema": {"type": "string", "format": "binary"}} for fmt in AudioFormat},
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": SCHEMA_REF.format("GenerateResponse")},
                    {"$ref": SCHEMA_REF.format("CritiqueResponse")},
                ]
            }
        },
    }
    job_paths = {
        "/jobs/{job_id}": {
            "get": operation_of(
                "job_status",
                "The job's state and progress.",
                {"200": {"description": "The job's status.", "content": status_content()}},
            ),
            "delete": cancel_operation("cancel_job"),
        },
        "/jobs/{job_id}/cancel": {"post": cancel_operation("cancel_job_post")},
        "/jobs/{job_id}/events": {
            "get": operation_of(
                "job_events",
                "Server-Sent Events: a `status` event (data: the JobStatus JSON) at once and at every change; "
                "the stream ends after the final status. A client that reconnects gets the current status first.",
                {
                    "200": {
                        "description": "`text/event-stream` of `status` events.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/jobs/{job_id}/result": {
            "get": operation_of(
                "job_result",
                "What the synchronous route would have answered: the audio file (generate, transform, edit, with its "
                "`X-` provenance headers), or the JSON (generate/json, transform/json, edit/json, critique).",
                {
                    "200": {"description": "The result.", "content": result_content},
                    "409": error(
                        "The job has no result: still queued or running, failed, or cancelled (`kind`: `conflict`)."
                    ),
                },
            )
        },
    }
    for path, operations in job_paths.items():
        paths[path] = operations


def operation_of(operation_id: str, description: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "tags": ["Jobs"],
        "description": description,
        "parameters": [copy.deepcopy(JOB_ID)],
        "responses": dict(sorted({**responses, "404": error(NOT_FOUND), "410": error(GONE)}.items())),
    }


def cancel_operation(operation_id: str) -> dict[str, Any]:
    return operation_of(
        operation_id,
        "Cancel the job: a queued job never runs, a running one stops at its next denoising step or token. "
        "Answers the status at once; the state becomes `cancelled` within a moment.",
        {"202": {"description": "Cancellation under way (or the job had already ended).", "content": status_content()}},
    )
