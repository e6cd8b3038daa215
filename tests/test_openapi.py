"""The served OpenAPI document is a contract that validators and client generators accept, and that clients
generated from it can use against the real server (tiny profile)."""

from __future__ import annotations

import copy
import importlib
import io
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel

import schemas as models
from critique_format import MAX_TIME_S, Dimension
from front.openai_api.models import document_openai
from front.openapi import published_openapi
from jobs.openapi import document_jobs
from tests.audio_files import audio_file

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ERROR_STATUSES = {"400", "408", "413", "415", "500", "503"}
FILE_ROUTES = {"/generate", "/transform", "/edit"}
AUDIO_MEDIA_TYPES = {"audio/wav", "audio/flac", "audio/mpeg", "audio/ogg"}
FILE_HEADERS = {"X-Seed", "X-Model-Id", "X-Profile", "X-Sample-Rate", "X-Clap-Score", "X-Critic-Score", "X-Edit-Start"}
QUICK = {"steps": 3, "duration": 1}
CLIENT_PACKAGE = "audio_studio_client"
# openapi-python-client only knows JSON, text and octet-stream bodies: audio responses are read as bytes.
CLIENT_CONFIG = f"""\
package_name_override: {CLIENT_PACKAGE}
content_type_overrides:
  audio/wav: application/octet-stream
  audio/flac: application/octet-stream
  audio/mpeg: application/octet-stream
  audio/ogg: application/octet-stream
"""
OPENAPI_TYPESCRIPT = "openapi-typescript@7.13.0"
NODE_TOOLS = ROOT / ".cache" / "node-tools"


@pytest.fixture(scope="module")
def document(server: str) -> dict[str, Any]:
    response = httpx.get(f"{server}/docs.json", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def post_operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {path: ops["post"] for path, ops in document["paths"].items() if "post" in ops}


def component(document: dict[str, Any], ref: str) -> dict[str, Any]:
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_served_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "audio-studio"
    assert document["info"]["version"] == VERSION
    assert "BentoML" not in document["info"]["description"]
    nodes = list(walk(document))
    assert not [n for n in nodes if n.get("type") == "file"]
    assert not [n for n in nodes if "root_input" in n]
    assert not [n for n in nodes if "nullable" in n]


def test_published_openapi_is_pure_and_idempotent(document: dict[str, Any]) -> None:
    served = copy.deepcopy(document)
    assert published_openapi(document, VERSION, fragments=[document_jobs, document_openai]) == served
    assert document == served


def test_the_openai_routes_declare_openais_error_shape_and_their_stream(document: dict[str, Any]) -> None:
    operations = {p: op for p, op in post_operations(document).items() if p.startswith("/v1/")}
    assert set(operations) == {"/v1/chat/completions", "/v1/audio/generate"}
    for path, operation in operations.items():
        errors = {code: r for code, r in operation["responses"].items() if int(code) >= 400}
        assert set(errors) == {*ERROR_STATUSES, "404"}, path
        for code, response in errors.items():
            assert response["content"] == {
                "application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}
            }, (path, code)
    chat = operations["/v1/chat/completions"]["responses"]["200"]
    assert set(chat["content"]) == {"application/json", "text/event-stream"} and "[DONE]" in chat["description"]
    assert set(operations["/v1/audio/generate"]["responses"]["200"]["content"]) == AUDIO_MEDIA_TYPES
    request = component(
        document, operations["/v1/chat/completions"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    )
    assert request["properties"]["max_tokens"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 2048}
    assert document["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]


def test_every_post_route_declares_its_errors_and_media_types(document: dict[str, Any]) -> None:
    operations = {p: op for p, op in post_operations(document).items() if not p.startswith(("/jobs/", "/v1/"))}
    assert set(operations) == {
        "/generate",
        "/generate/json",
        "/transform",
        "/transform/json",
        "/edit",
        "/edit/json",
        "/critique",
    }
    for path, operation in operations.items():
        responses = operation["responses"]
        assert set(responses) == {"200", *ERROR_STATUSES}, path  # no 404: the route exists
        for status in ERROR_STATUSES:
            assert responses[status]["content"] == {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            }, (path, status)
        assert responses["503"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
        assert operation["requestBody"]["required"] is True
        ok = responses["200"]
        if path in FILE_ROUTES:
            assert set(ok["content"]) == AUDIO_MEDIA_TYPES, path
            for media in ok["content"].values():
                assert media["schema"] == {"type": "string", "format": "binary"}
            assert set(ok["headers"]) >= FILE_HEADERS, path
            assert ok["headers"]["X-Profile"]["schema"]["enum"] == ["full", "tiny", "random"]
            assert ok["headers"]["X-Clap-Score"]["required"] is False
            assert ok["headers"]["X-Critic-Score"]["required"] is False
        elif path == "/critique":  # JSON, or streamed as Server-Sent Events
            assert set(ok["content"]) == {"application/json", "text/event-stream"}, path
            assert "`delta`" in ok["description"] and "`result`" in ok["description"]
        else:
            assert set(ok["content"]) == {"application/json"}, path
        body_types = set(operation["requestBody"]["content"])
        form = path.startswith(("/transform", "/edit", "/critique"))
        assert body_types == {"multipart/form-data" if form else "application/json"}, path
        assert ("upload" in responses["415"]["description"]) is form, path
    error = document["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["detail"]["type"] == "array"
    assert {"InvalidArgument", "NotFound", "InternalServerError"}.isdisjoint(document["components"]["schemas"])


def test_job_routes_are_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for api in ("generate", "generate/json", "transform", "transform/json", "edit", "edit/json", "critique"):
        submit, synchronous = paths[f"/jobs/{api}"]["post"], paths[f"/{api}"]["post"]
        assert submit["requestBody"] == synchronous["requestBody"]  # the same body, the same validation
        assert set(submit["responses"]) == {"202", "429", *ERROR_STATUSES}
        assert submit["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobStatus")
        assert "Retry-After" in submit["responses"]["429"]["headers"]
    assert set(paths["/jobs/{job_id}"]) == {"get", "delete"}
    assert set(paths["/jobs/{job_id}/result"]["get"]["responses"]) == {"200", "404", "409", "410"}
    result_types = set(paths["/jobs/{job_id}/result"]["get"]["responses"]["200"]["content"])
    assert result_types == {*AUDIO_MEDIA_TYPES, "application/json"}
    compression = document["components"]["schemas"]["GenerateRequest"]["properties"]["compression"]
    assert {"type": "number", "minimum": 0.0, "maximum": 1.0} in compression["anyOf"]
    assert "text/event-stream" in paths["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    job = document["components"]["schemas"]["JobStatus"]
    assert set(job["properties"]["state"]["enum"]) == {"queued", "running", "succeeded", "failed", "cancelled"}
    progress = document["components"]["schemas"]["JobProgress"]["properties"]
    assert progress["fraction"]["maximum"] == 1.0 and "denoising" in progress["phase"]["enum"]


def test_the_structured_critique_is_documented(document: dict[str, Any]) -> None:
    """The object `output: json` returns is a published schema: scores 1-10, bounded strings and lists, times."""
    schemas = document["components"]["schemas"]
    structured = schemas["StructuredCritique"]
    assert set(structured["required"]) == {"summary", "assessments", "practice_plan"}
    assert structured["properties"]["findings"]["items"] == {"$ref": "#/components/schemas/Finding"}
    score = schemas["Assessment"]["properties"]["score"]
    assert (score["type"], score["minimum"], score["maximum"]) == ("integer", 1, 10)
    assert set(schemas["Assessments"]["required"]) == {d.value for d in Dimension}
    assert schemas["Finding"]["properties"]["start_s"]["maximum"] == MAX_TIME_S
    answer = schemas["CritiqueResponse"]["properties"]
    assert {"$ref": "#/components/schemas/StructuredCritique"} in answer["structured"]["anyOf"]
    assert {"closed_early", "long_audio", "segments"} <= set(answer)
    form = component(
        document,
        post_operations(document)["/critique"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"],
    )
    assert (
        form["properties"]["output"]["default"] == "text" and form["properties"]["long_audio"]["default"] == "truncate"
    )
    rank_by = schemas["GenerateRequest"]["properties"]["rank_by"]
    assert rank_by["default"] == "clap"


def test_infrastructure_routes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/livez"]["get"]["responses"]) == {"200"}
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]


def test_file_fields_are_single_binary_parts(document: dict[str, Any]) -> None:
    critique = document["components"]["schemas"]["CritiqueRequest"]
    transform = document["components"]["schemas"]["TransformRequest"]
    for field in ("audio", "reference"):
        assert {k: critique["properties"][field][k] for k in ("type", "format")} == {
            "type": "string",
            "format": "binary",
        }
        assert field not in critique.get("required", [])
    assert transform["properties"]["audio"]["format"] == "binary" and "audio" in transform["required"]


def test_fields_defaults_and_ranges_are_the_models_own(document: dict[str, Any]) -> None:
    """One source of truth: every non-file field of each public model is exactly what pydantic writes."""
    published = document["components"]["schemas"]
    checked = 0
    for name in ("GenerateRequest", "TransformRequest", "CritiqueRequest", "GenerateResponse", "CritiqueResponse"):
        model: type[BaseModel] = getattr(models, name)
        expected = model.model_json_schema(ref_template="#/components/schemas/{model}")
        assert set(published[name]["properties"]) == set(expected["properties"]), name
        assert set(published[name].get("required", [])) <= set(expected.get("required", [])), name
        for field, schema in expected["properties"].items():
            if field in getattr(model, "model_fields", {}) and "Path" in str(model.model_fields[field].annotation):
                continue  # file fields are rewritten to single binary parts
            assert published[name]["properties"][field] == schema, (name, field)
            checked += 1
    assert checked > 30
    preset = published["CritiqueResponse"]["properties"]["preset"]
    assert {"type": "null"} in preset["anyOf"]  # the critique answers preset null when none was asked


def test_request_examples_match_their_schemas(document: dict[str, Any]) -> None:
    seen = 0
    for path, operation in post_operations(document).items():
        if path.endswith("/cancel"):
            assert "requestBody" not in operation, path  # a cancel has no body
            continue
        for media_type, media in operation["requestBody"]["content"].items():
            assert media.get("examples"), (path, media_type)
            components = copy.deepcopy(document["components"])
            model = component({"components": components}, media["schema"]["$ref"])
            files = {k for k, v in model["properties"].items() if v.get("format") == "binary"}
            model["required"] = [k for k in model.get("required", []) if k not in files]  # parts beside the example
            root = {**media["schema"], "components": components}
            for name, example in media["examples"].items():
                jsonschema.Draft202012Validator(root).validate(example["value"])
                assert not files & set(example["value"]), (path, name)
                seen += 1
    assert seen >= 10  # the synchronous routes and the job submissions


def test_swagger_ui_reads_the_published_document_with_no_third_party_script(server: str) -> None:
    index = httpx.get(f"{server}/", timeout=30)
    assert index.status_code == 200 and '"./docs.json"' in index.text and "swagger-ui-bundle.js" in index.text
    assert "googletagmanager" not in index.text and "https://" not in index.text  # BentoML's page loads GTM
    policy = index.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "https:" not in policy
    bundle = httpx.get(f"{server}/static_content/swagger-ui-bundle.js", timeout=30)
    assert "isOAS31" in bundle.text  # Swagger UI 5: renders OpenAPI 3.1
    assert httpx.head(f"{server}/docs.json", timeout=30).status_code == 200


@pytest.fixture(scope="module")
def client_package(document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Python client generated by openapi-python-client from the served document, imported."""
    work = tmp_path_factory.mktemp("openapi_client")
    spec = work / "openapi.json"
    spec.write_text(httpx.Response(200, json=document).text)
    (work / "config.yaml").write_text(CLIENT_CONFIG)
    out = work / "generated"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "openapi_python_client", "generate", "--meta", "none"),
            *("--path", str(spec), "--output-path", str(out), "--config", str(work / "config.yaml")),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output and "Error" not in output, output
    package_root = work / "importable"
    package_root.mkdir()
    shutil.move(out, package_root / CLIENT_PACKAGE)
    sys.path.insert(0, str(package_root))
    try:
        yield importlib.import_module(CLIENT_PACKAGE)
    finally:
        sys.path.remove(str(package_root))
        for name in [m for m in sys.modules if m == CLIENT_PACKAGE or m.startswith(f"{CLIENT_PACKAGE}.")]:
            del sys.modules[name]


def test_generated_python_client_calls_every_route(client_package: Any, server: str) -> None:
    def operation(name: str) -> Any:
        return importlib.import_module(f"{CLIENT_PACKAGE}.api.service_ap_is.audio_studio_{name}")

    generate, generate_json, transform, critique = map(
        operation, ("generate", "generate_json", "transform", "critique")
    )
    m = importlib.import_module(f"{CLIENT_PACKAGE}.models")
    File = importlib.import_module(f"{CLIENT_PACKAGE}.types").File
    client = client_package.Client(base_url=server, timeout=120, raise_on_unexpected_status=True)

    def clip() -> Any:
        return File(payload=io.BytesIO(audio_file("wav", 1.5)), file_name="clip.wav", mime_type="audio/wav")

    audio = generate.sync_detailed(client=client, body=m.GenerateRequest(prompt="rain", seed=5, **QUICK))
    assert audio.status_code == 200, audio.content
    assert audio.content[:4] == b"RIFF" and audio.headers["x-seed"] == "5" and audio.headers["x-profile"] == "tiny"

    flac = generate.sync_detailed(
        client=client, body=m.GenerateRequest(prompt="rain", format_=m.AudioFormat.FLAC, **QUICK)
    )
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac" and flac.content[:4] == b"fLaC"

    v1 = generate.sync_detailed(
        client=client, body=m.GenerateRequest(prompt="rain", model=m.GenerationModel.AUDIOLDM, seed=5, **QUICK)
    )
    assert v1.status_code == 200 and v1.headers["x-model-id"] == "audio-studio/tiny-audioldm"
    listed = importlib.import_module(f"{CLIENT_PACKAGE}.api.service.list_models").sync(client=client)
    assert isinstance(listed, m.ModelsResponse), listed
    assert {family.name for family in listed.models} == {"audioldm2", "audioldm", "music-flamingo"}

    answer = generate_json.sync(client=client, body=m.GenerateRequest(prompt="rain", num_waveforms=2, seed=9, **QUICK))
    assert isinstance(answer, m.GenerateResponse), answer
    assert [w.seed for w in sorted(answer.waveforms, key=lambda w: w.seed)] == [9, 10]

    transformed = transform.sync_detailed(
        client=client, body=m.TransformRequest(prompt="rain, but heavier", audio=clip(), steps=3, strength=0.5)
    )
    assert transformed.status_code == 200, transformed.content
    assert transformed.content[:4] == b"RIFF"

    text_only = critique.sync(client=client, body=m.CritiqueRequest(prompt="What is vibrato?", max_new_tokens=8))
    assert isinstance(text_only, m.CritiqueResponse), text_only
    assert text_only.preset is None and text_only.audio_seconds == []

    with_audio = critique.sync(
        client=client, body=m.CritiqueRequest(audio=clip(), prompt="808", max_new_tokens=8, do_sample=True, seed=3)
    )
    assert isinstance(with_audio, m.CritiqueResponse), with_audio
    assert [u.field for u in with_audio.audio_seconds] == ["audio"] and with_audio.seed == 3

    compared = critique.sync(
        client=client, body=m.CritiqueRequest(audio=clip(), reference=clip(), preset=m.Preset.COMPARE, max_new_tokens=4)
    )
    assert isinstance(compared, m.CritiqueResponse), compared
    assert [u.field for u in compared.audio_seconds] == ["audio", "reference"] and compared.preset == m.Preset.COMPARE

    refused = generate.sync_detailed(client=client, body=m.GenerateRequest(prompt="rain", duration=601, steps=3))
    assert refused.status_code == 400
    assert isinstance(refused.parsed, m.ErrorResponse), refused.content
    assert refused.parsed.kind.value == "invalid_input" and refused.parsed.detail[0].loc == ["duration"]


def test_generated_python_client_runs_a_job(client_package: Any, server: str) -> None:
    def operation(name: str) -> Any:
        return importlib.import_module(f"{CLIENT_PACKAGE}.api.jobs.{name}")

    submit = importlib.import_module(f"{CLIENT_PACKAGE}.api.jobs.audio_studio_submit_generate")
    job_status, job_result, cancel_job = map(operation, ("job_status", "job_result", "cancel_job"))
    m = importlib.import_module(f"{CLIENT_PACKAGE}.models")
    client = client_package.Client(base_url=server, timeout=120, raise_on_unexpected_status=True)

    accepted = submit.sync(client=client, body=m.GenerateRequest(prompt="rain", seed=5, **QUICK))
    assert isinstance(accepted, m.JobStatus) and accepted.state == m.JobStatusState.QUEUED, accepted
    deadline = time.monotonic() + 120
    while (current := job_status.sync(accepted.id, client=client)).state not in (
        m.JobStatusState.SUCCEEDED,
        m.JobStatusState.FAILED,
    ):
        assert time.monotonic() < deadline, current
        time.sleep(0.2)
    assert current.state == m.JobStatusState.SUCCEEDED and current.progress.fraction == 1.0
    audio = job_result.sync_detailed(accepted.id, client=client)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF" and audio.headers["x-seed"] == "5"
    ended = cancel_job.sync(accepted.id, client=client)  # cancelling a finished job changes nothing
    assert isinstance(ended, m.JobStatus) and ended.state == m.JobStatusState.SUCCEEDED
    missing = job_status.sync_detailed("0" * 32, client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, m.ErrorResponse)


def test_openapi_typescript_generates_types(document: dict[str, Any], tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm and node are needed for openapi-typescript")
    binary = NODE_TOOLS / "node_modules" / ".bin" / "openapi-typescript"
    if not binary.exists():
        install = subprocess.run(
            [npm, "install", "--prefix", str(NODE_TOOLS), "--no-audit", "--no-fund", "--silent", OPENAPI_TYPESCRIPT],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if install.returncode != 0:
            pytest.skip(f"could not install {OPENAPI_TYPESCRIPT} from the npm registry: {install.stderr[-500:]}")
    spec = tmp_path / "openapi.json"
    spec.write_text(httpx.Response(200, json=document).text)
    out = tmp_path / "api.d.ts"
    result = subprocess.run([str(binary), str(spec), "-o", str(out)], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warn" not in output.lower() and "error" not in output.lower(), output
    types = out.read_text()
    assert '"audio/flac": string' in types and '"X-Seed": number' in types
    assert 'preset: components["schemas"]["Preset"] | null' in types
