"""Kubernetes manifests: kustomize overlays render offline and validate against the Kubernetes schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
RUNNERS = ("audioldm2-runner", "music-flamingo-runner")


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is part of this machine image"
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container(deployment: dict) -> dict:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("overlay", ["gpu", "tiny-cpu"])
def test_overlays_validate_against_the_kubernetes_schemas(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(render(overlay)))
    result = subprocess.run(
        [str(VALIDATE), "--strict", "--quiet", str(rendered)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_runner_is_its_own_gpu_deployment_with_service_hpa_and_pdb() -> None:
    docs = render("gpu")
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    hpas, pdbs = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "PodDisruptionBudget")
    for name in RUNNERS:
        runner = container(deployments[name])
        assert runner["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert runner["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert runner["startupProbe"]["httpGet"]["path"] == "/readyz"
        assert runner["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert runner["livenessProbe"]["httpGet"]["path"] == "/livez"
        probe = runner["startupProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 600  # model loading takes minutes
        assert name in services and hpas[name]["spec"]["scaleTargetRef"]["name"] == name and name in pdbs
    front = container(deployments["audio-studio-front"])
    assert "nvidia.com/gpu" not in front["resources"]["requests"]
    assert "audio-studio-front" in hpas and "audio-studio-front" in pdbs


def test_front_reaches_runners_by_url_and_secrets_come_from_secrets() -> None:
    docs = render("gpu")
    [config] = by_kind(docs, "ConfigMap").values()
    assert config["data"]["AUDIO_STUDIO_AUDIOLDM2_URL"] == "http://audioldm2-runner:3000"
    assert config["data"]["AUDIO_STUDIO_MUSIC_FLAMINGO_URL"] == "http://music-flamingo-runner:3000"
    assert config["data"]["AUDIO_STUDIO_PROFILE"] == "full"
    assert not by_kind(docs, "Secret")  # no secret values in the repository
    for deployment in by_kind(docs, "Deployment").values():
        for env in container(deployment).get("env", []):
            assert "value" not in env or "TOKEN" not in env["name"]
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_tiny_cpu_overlay_drops_gpus_and_picks_the_tiny_profile() -> None:
    docs = render("tiny-cpu")
    [config] = by_kind(docs, "ConfigMap").values()
    assert config["data"]["AUDIO_STUDIO_PROFILE"] == "tiny"
    for deployment in by_kind(docs, "Deployment").values():
        assert "nvidia.com/gpu" not in str(container(deployment)["resources"])
