#!/usr/bin/env bash
# The container stage of CI (.ci/run runs it after the suite): build the CPU image and a Redis image, then run
# tests/container (one container, then the Kubernetes tiny-cpu overlay as one pod) against them. Everything is cached
# under .cache/container and in podman's image store; a fresh machine builds it all (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
# shellcheck source=deploy/container/podman.sh
. deploy/container/podman.sh
image=$(bash deploy/container/build.sh)
# Redis for the pod: no registry serves images here, so Debian's redis-server on the same kind of base.
redis=localhost/audio-studio-redis:bookworm
if ! podman image exists "$redis"; then
    mmdebstrap --quiet --variant=essential --include=redis-server,redis-tools bookworm "$CONTAINER_CACHE/redis.tar"
    podman import --quiet "$CONTAINER_CACHE/redis.tar" "$redis" >/dev/null && rm -f "$CONTAINER_CACHE/redis.tar"
fi
echo "container stage: images ready after $(($(date +%s) - start)) s" >&2
AUDIO_STUDIO_CONTAINER_TESTS=1 AUDIO_STUDIO_IMAGE=$image AUDIO_STUDIO_REDIS_IMAGE=$redis \
    .venv/bin/python -m pytest -q -s -p no:randomly tests/container "$@"
echo "container stage: $(($(date +%s) - start)) s" >&2
