"""The Bento's CPU image, run for real with podman: one container, then the distributed topology as one pod.

Not part of the default suite (tests/conftest.py leaves this folder out): `deploy/container/test.sh` builds the
images and runs this module with AUDIO_STUDIO_CONTAINER_TESTS=1. Test traffic goes to 127.0.0.1 only: published
ports on loopback, and inside the pod the Kubernetes service names resolve to 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests import jobs_client
from tests.audio_files import audio_file
from tests.conftest import _free_port
from tests.unit.test_k8s import by_kind, container, render

IMAGE = os.environ.get("AUDIO_STUDIO_IMAGE", "localhost/audio-studio:cpu")
REDIS_IMAGE = os.environ.get("AUDIO_STUDIO_REDIS_IMAGE", "localhost/audio-studio-redis:bookworm")
DEMO_KEY = {"authorization": "Bearer audio-studio-demo-key"}  # overlays/tiny-cpu/demo-api-keys, not a secret
READY_S = 600  # cold start on a busy 2-core machine
TIMEOUT = 120
GENERATE = {"prompt": "rain", "duration": 1, "steps": 2, "seed": 1}
# The demo's per-key quotas would answer 429 to the load below; this is the only departure from the overlay.
QUOTAS = {"AUDIO_STUDIO_KEY_MAX_IN_FLIGHT": "64", "AUDIO_STUDIO_KEY_RATE_PER_MINUTE": "10000"}
QUOTAS |= {"AUDIO_STUDIO_KEY_BURST": "1000"}


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout.strip()


def logs(name: str) -> str:
    return subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=60).stdout


def wait_ready(url: str, names: list[str]) -> float:
    """Seconds until `url`/readyz answers 200; fails with the containers' logs otherwise."""
    start = time.monotonic()
    while time.monotonic() - start < READY_S:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("not ready:\n" + "\n".join(f"--- {n}\n{logs(n)[-3000:]}" for n in names))


def every_api(url: str, headers: dict[str, str] | None = None) -> None:
    """/generate, /transform, /critique and a generate job, each answered with a success."""
    clip = ("clip.wav", audio_file("wav", 1.0), "audio/wav")
    generated = httpx.post(f"{url}/generate", json=GENERATE, headers=headers, timeout=TIMEOUT)
    assert generated.status_code == 200 and generated.content[:4] == b"RIFF", generated.text[:500]
    for route, fields in (
        ("transform", {"prompt": "jazz", "steps": "2"}),
        ("critique", {"preset": "key", "max_new_tokens": "4"}),
    ):
        answer = httpx.post(f"{url}/{route}", data=fields, files={"audio": clip}, headers=headers, timeout=TIMEOUT)
        assert answer.status_code == 200, (route, answer.text[:500])
    job = jobs_client.submit(url, "generate", headers=headers, json=GENERATE)
    assert jobs_client.follow(url, job["id"], headers)[-1]["state"] == "succeeded"


def test_one_container_serves_every_api_on_its_published_port() -> None:
    name, port = f"audio-studio-one-{os.getpid()}", _free_port()
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:3000", "-e", "AUDIO_STUDIO_PROFILE=tiny", IMAGE)
    try:
        cold = wait_ready(f"http://127.0.0.1:{port}", [name])
        print(f"\ncold start to ready, one container: {cold:.1f} s")
        every_api(f"http://127.0.0.1:{port}")
        assert "audio-studio front: profile=tiny" in logs(name)
        assert "AudioLDM2 runner: profile=tiny" in logs(name)
    finally:
        podman("rm", "-f", name)


# The distributed topology: every Deployment and the Redis StatefulSet of the rendered tiny-cpu overlay as containers
# of one pod, wired by the overlay's own environment. A pod is one network namespace, so each Service gets its own
# port there and the URLs' ports are rewritten to it; the Service names resolve to 127.0.0.1.


class Pod:
    def __init__(self, tmp: Path) -> None:
        docs = render("tiny-cpu")
        self.tmp, self.name = tmp, f"audio-studio-{os.getpid()}"
        self.deployments = by_kind(docs, "Deployment")
        [self.redis_set] = by_kind(docs, "StatefulSet").values()
        [config] = by_kind(docs, "ConfigMap").values()
        self.secrets = by_kind(docs, "Secret")
        services = [*by_kind(docs, "Service"), "front-b"]  # two front replicas: two ports in one namespace
        self.ports = {service: _free_port() for service in services}
        self.config = {key: self.rewire(value) for key, value in config["data"].items()}
        fronts = [f"127.0.0.1:{self.ports[n]}:{self.ports[n]}" for n in ("audio-studio", "front-b")]
        hosts = [f"--add-host={service}:127.0.0.1" for service in services]
        podman("pod", "create", "--name", self.name, *hosts, *(f"-p={p}" for p in fronts))
        self.containers: list[str] = []

    def rewire(self, value: str) -> str:
        """A URL to a Service, pointed at the port that Service has in the pod."""
        return re.sub(r"//([a-z0-9-]+):\d+", lambda m: f"//{m[1]}:{self.ports.get(m[1], m[0])}", value)

    def url(self, front: str = "audio-studio") -> str:
        return f"http://127.0.0.1:{self.ports[front]}"

    def run(self, name: str, pod_spec: dict, image: str, args: list[str], extra: dict[str, str]) -> None:
        """One container of the pod, with its manifest's environment and volumes (Secrets written out as files)."""
        [spec] = pod_spec["containers"]
        env = dict(self.config)
        env |= {e["name"]: self.rewire(e["value"]) for e in spec.get("env", []) if "value" in e}
        sources = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
        volumes = []
        for mount in spec.get("volumeMounts", []):
            folder = self.tmp / name / mount["name"]
            folder.mkdir(parents=True)
            secret = sources.get(mount["name"], {}).get("secret")
            if secret:
                data = self.secrets[secret["secretName"]]["data"]
                for item in secret["items"]:
                    (folder / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
            volumes.append(f"-v={folder}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}")
        flags = [f"-e={k}={v}" for k, v in (env | extra).items()]
        podman("run", "-d", "--pod", self.name, "--name", f"{self.name}-{name}", *flags, *volumes, image, *args)
        self.containers.append(f"{self.name}-{name}")

    def serve(self, deployment: str, name: str, service: str) -> None:
        pod_spec = self.deployments[deployment]["spec"]["template"]["spec"]
        args = [str(a) for a in container(self.deployments[deployment])["args"]]
        args[args.index("--port") + 1] = str(self.ports[service])
        self.run(name, pod_spec, IMAGE, args, QUOTAS)

    def start(self) -> None:
        pod_spec = self.redis_set["spec"]["template"]["spec"]
        pod_spec["containers"][0]["volumeMounts"] = []  # its volumeClaimTemplate: the container's own /data
        port = str(self.ports["audio-studio-redis"])
        self.run(
            "redis", pod_spec, REDIS_IMAGE, [*pod_spec["containers"][0]["args"], "--port", port, "--dir", "/tmp"], {}
        )
        for runner in ("audioldm2-runner", "music-flamingo-runner", "audioldm-runner"):
            self.serve(runner, runner, runner)
        self.serve("audio-studio-front", "front-a", "audio-studio")
        self.serve("audio-studio-front", "front-b", "front-b")

    def remove(self) -> None:
        podman("pod", "rm", "-f", self.name, timeout=180)


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    tmp = tmp_path_factory.mktemp("pod")
    tmp.chmod(0o755)
    pod = Pod(tmp)
    try:
        pod.start()
        cold = max(wait_ready(pod.url(front), pod.containers) for front in ("audio-studio", "front-b"))
        print(f"\ncold start to ready, the pod (2 fronts, 3 runners, Redis): {cold:.1f} s")
        yield pod
    finally:
        pod.remove()


def test_the_pod_serves_every_api_and_runners_say_which_profile(pod: Pod) -> None:
    every_api(pod.url(), DEMO_KEY)
    for runner, label in (("audioldm2-runner", "AudioLDM2"), ("music-flamingo-runner", "Music Flamingo")):
        assert f"{label} runner: profile=tiny" in logs(f"{pod.name}-{runner}")


def test_a_job_submitted_on_one_front_is_fetched_from_the_other(pod: Pod) -> None:
    job = jobs_client.submit(pod.url("audio-studio"), "generate", headers=DEMO_KEY, json=GENERATE)
    seen = jobs_client.follow(pod.url("front-b"), job["id"], DEMO_KEY)
    assert seen[-1]["state"] == "succeeded", seen[-1]
    result = httpx.get(f"{pod.url('front-b')}/jobs/{job['id']}/result", headers=DEMO_KEY, timeout=TIMEOUT)
    assert result.status_code == 200 and result.content[:4] == b"RIFF", result.text[:500]


def generate_status(url: str) -> tuple[int, str | None]:
    try:
        answer = httpx.post(f"{url}/generate", json=GENERATE, headers=DEMO_KEY, timeout=TIMEOUT)
    except httpx.TimeoutException:
        return -1, None  # a hang
    return answer.status_code, answer.headers.get("retry-after")


def test_killing_the_audioldm2_runner_under_load_gives_503_or_success_and_recovers(pod: Pod) -> None:
    runner = f"{pod.name}-audioldm2-runner"
    urls = [pod.url("audio-studio"), pod.url("front-b")] * 3
    with ThreadPoolExecutor(len(urls)) as pool:
        before = [pool.submit(generate_status, url) for url in urls]
        time.sleep(1.0)  # requests in flight
        podman("kill", runner)
        during = [pool.submit(generate_status, url) for url in urls]
        answers = [f.result() for f in before + during]
    print(f"\nstatuses while the AudioLDM2 runner was killed: {sorted(s for s, _ in answers)}")
    assert {status for status, _ in answers} <= {200, 503}, answers
    assert all(retry for status, retry in answers if status == 503), answers
    killed = time.monotonic()
    podman("start", runner)
    while (status := generate_status(pod.url())[0]) != 200:
        assert status == 503 and time.monotonic() - killed < READY_S, status
        time.sleep(1.0)
    print(f"AudioLDM2 runner restarted: /generate answered 200 again after {time.monotonic() - killed:.1f} s")


def test_without_redis_readiness_fails_and_jobs_get_503_until_it_returns(pod: Pod) -> None:
    redis = f"{pod.name}-redis"
    podman("stop", redis)
    try:
        for front in ("audio-studio", "front-b"):
            assert httpx.get(f"{pod.url(front)}/readyz", timeout=30).status_code == 503
        answer = httpx.post(f"{pod.url()}/jobs/generate", json=GENERATE, headers=DEMO_KEY, timeout=TIMEOUT)
        assert answer.status_code == 503 and answer.headers.get("retry-after"), answer.text[:500]
    finally:
        podman("start", redis)
    wait_ready(pod.url(), pod.containers)
    assert jobs_client.submit(pod.url("front-b"), "generate", headers=DEMO_KEY, json=GENERATE)["state"]
