"""Kubernetes manifests: kustomize overlays render offline and validate against the Kubernetes schemas."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
RUNNERS = ("audioldm2-runner", "music-flamingo-runner")
OPTIONAL_RUNNER = "audioldm-runner"  # AudioLDM (v1): off in the GPU overlay, on in the demo


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


# API keys, quotas and network policies.

KEYS_MOUNT_SECRET = "audio-studio-api-keys"
KEY_LINE = re.compile(r"sha256:[0-9a-f]{64}( \S+)?")
DEMO_KEY = "audio-studio-demo-key"  # documented as not secret in overlays/tiny-cpu
DEMO_KEYS_FILE = ROOT / "deploy" / "k8s" / "overlays" / "tiny-cpu" / "demo-api-keys"
QUOTAS = (
    "AUDIO_STUDIO_KEY_MAX_IN_FLIGHT",
    "AUDIO_STUDIO_KEY_RATE_PER_MINUTE",
    "AUDIO_STUDIO_KEY_BURST",
    "AUDIO_STUDIO_AUDIOLDM2_MAX_QUEUED",
    "AUDIO_STUDIO_MUSIC_FLAMINGO_MAX_QUEUED",
)


def key_entries(text: str) -> dict[str, str]:
    """digest -> name of a keys file, failing on any line the service would not accept."""
    entries = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert KEY_LINE.fullmatch(line), f"not a keys-file line: {line!r}"
        digest, _, name = line.removeprefix("sha256:").partition(" ")
        entries[digest] = name
    return entries


@pytest.mark.parametrize("overlay", ["gpu", "tiny-cpu"])
def test_front_reads_its_api_keys_from_the_mounted_secret(overlay: str) -> None:
    docs = render(overlay)
    pod = by_kind(docs, "Deployment")["audio-studio-front"]["spec"]["template"]["spec"]
    front = container(by_kind(docs, "Deployment")["audio-studio-front"])
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == KEYS_MOUNT_SECRET]
    assert not volume["secret"].get("optional")  # no Secret, no start: never serve without keys
    items = volume["secret"].get("items")
    assert items is None or [item["key"] for item in items] == ["api-keys"]
    file_name = items[0]["path"] if items else "api-keys"
    [mount] = [m for m in front["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert "subPath" not in mount and "subPathExpr" not in mount  # subPath mounts never see a Secret update
    env = {e["name"]: e for e in front["env"]}
    assert env["AUDIO_STUDIO_API_KEYS_FILE"]["value"] == f"{mount['mountPath'].rstrip('/')}/{file_name}"
    [config] = by_kind(docs, "ConfigMap").values()
    assert config["data"]["AUDIO_STUDIO_METRICS_NEED_KEY"] == "true"
    # Annotation-driven scraping cannot send a key, so the front must not ask for it.
    annotations = by_kind(docs, "Deployment")["audio-studio-front"]["spec"]["template"]["metadata"].get("annotations")
    assert "prometheus.io/scrape" not in (annotations or {})
    for name in RUNNERS:  # the runners read no keys: only the front is mounted the Secret
        assert KEYS_MOUNT_SECRET not in str(by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"])


def test_gpu_overlay_ships_no_key_and_says_how_to_create_the_secret() -> None:
    assert not by_kind(render("gpu"), "Secret")
    kustomization = (ROOT / "deploy" / "k8s" / "overlays" / "gpu" / "kustomization.yaml").read_text()
    assert f"kubectl -n audio-studio create secret generic {KEYS_MOUNT_SECRET} --from-file=api-keys=" in kustomization


def test_tiny_cpu_demo_key_is_documented_and_matches_the_generated_secret() -> None:
    text = DEMO_KEYS_FILE.read_text()
    entries = key_entries(text)
    assert entries == {hashlib.sha256(DEMO_KEY.encode()).hexdigest(): "demo"}
    assert DEMO_KEY in text and "not a" in text.lower()  # the plaintext is documented as not secret
    secrets = by_kind(render("tiny-cpu"), "Secret")
    assert list(secrets) == [KEYS_MOUNT_SECRET]  # no name hash: an edit updates the mounted file in place
    assert base64.b64decode(secrets[KEYS_MOUNT_SECRET]["data"]["api-keys"]).decode() == text


def test_both_overlays_set_the_per_key_quotas_and_the_demo_is_smaller() -> None:
    quotas = {}
    for overlay in ("gpu", "tiny-cpu"):
        [config] = by_kind(render(overlay), "ConfigMap").values()
        quotas[overlay] = {name: int(config["data"][name]) for name in QUOTAS}
        assert all(value > 0 for value in quotas[overlay].values()), quotas[overlay]
        assert quotas[overlay]["AUDIO_STUDIO_KEY_BURST"] <= quotas[overlay]["AUDIO_STUDIO_KEY_RATE_PER_MINUTE"]
    assert all(quotas["tiny-cpu"][name] <= quotas["gpu"][name] for name in QUOTAS)


FRONT_PEER = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "audio-studio-front"}}}
PROMETHEUS_PEER = {  # scrapes the metric the runner HPAs scale on; kube-prometheus-stack's labels
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


@pytest.mark.parametrize("overlay", ["gpu", "tiny-cpu"])
def test_runner_network_policies_admit_only_the_front_and_prometheus(overlay: str) -> None:
    docs = render(overlay)
    deployments, policies = by_kind(docs, "Deployment"), by_kind(docs, "NetworkPolicy")
    front_labels = deployments["audio-studio-front"]["spec"]["template"]["metadata"]["labels"]
    assert FRONT_PEER["podSelector"]["matchLabels"].items() <= front_labels.items()
    for name in (*RUNNERS, OPTIONAL_RUNNER):
        runner = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert runner["app.kubernetes.io/name"] != front_labels["app.kubernetes.io/name"]
        port_names = {port["name"] for port in container(deployments[name])["ports"]}
        selecting = [p for p in policies.values() if p["spec"]["podSelector"]["matchLabels"].items() <= runner.items()]
        assert selecting, f"no NetworkPolicy selects the {name} pods"
        admitted = []
        for policy in selecting:
            assert "Ingress" in policy["spec"]["policyTypes"]
            for rule in policy["spec"].get("ingress", []):
                assert rule.get("from"), "an ingress rule without `from` admits every source"
                assert rule.get("ports") and {port["port"] for port in rule["ports"]} <= port_names
                admitted += rule["from"]
        assert FRONT_PEER in admitted
        assert all(peer in (FRONT_PEER, PROMETHEUS_PEER) for peer in admitted), admitted


@pytest.mark.parametrize("overlay", ["gpu", "tiny-cpu"])
def test_jobs_live_in_the_bundled_redis_and_the_front_is_ready_when_it_answers(overlay: str) -> None:
    docs = render(overlay)
    config = by_kind(docs, "ConfigMap")["audio-studio-config"]["data"]
    [redis] = by_kind(docs, "StatefulSet").values()
    service = by_kind(docs, "Service")["audio-studio-redis"]
    assert config["AUDIO_STUDIO_JOB_STORE"] == f"redis://{service['metadata']['name']}:6379/0"
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    args = container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and "noeviction" in args  # persisted, never evicted
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    front = container(by_kind(docs, "Deployment")["audio-studio-front"])
    assert front["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {item["name"]: item.get("value") for item in front["env"]}
    assert env["BENTOML_CONFIG_OPTIONS"] == "services.runner_probe.enabled=false"
    policy = by_kind(docs, "NetworkPolicy")["audio-studio-redis"]
    [peer] = policy["spec"]["ingress"][0]["from"]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "audio-studio-front"}


def test_the_playground_is_off_in_production_and_on_in_the_demo() -> None:
    setting = {
        overlay: by_kind(render(overlay), "ConfigMap")["audio-studio-config"]["data"]["AUDIO_STUDIO_PLAYGROUND"]
        for overlay in ("gpu", "tiny-cpu")
    }
    assert setting == {"gpu": "false", "tiny-cpu": "true"}


@pytest.mark.parametrize(("overlay", "on"), [("gpu", False), ("tiny-cpu", True)])
def test_the_optional_audioldm_runner_is_off_in_production_and_on_in_the_demo(overlay: str, on: bool) -> None:
    docs = render(overlay)
    [config] = by_kind(docs, "ConfigMap").values()
    runner = by_kind(docs, "Deployment")[OPTIONAL_RUNNER]
    assert config["data"]["AUDIO_STUDIO_AUDIOLDM_ENABLED"] == ("true" if on else "false")
    assert runner["spec"]["replicas"] == (1 if on else 0)
    assert config["data"]["AUDIO_STUDIO_AUDIOLDM_URL"] == f"http://{OPTIONAL_RUNNER}:3000"
    assert container(runner)["args"][2] == "runners.audioldm:AudioLDMRunner"
