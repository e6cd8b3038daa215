# Sourced by build.sh and test.sh: podman as it runs on these machines (../../docs/deployment.md#podman).
# Debian's runc (crun cannot handle the hybrid cgroups here) and no default ulimits (the sandbox may not raise
# RLIMIT_NOFILE). Elsewhere the defaults work; this only writes a containers.conf under the cache folder.
CONTAINER_CACHE=${AUDIO_STUDIO_CONTAINER_CACHE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.cache/container}
mkdir -p "$CONTAINER_CACHE"
command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null ||
    (apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap >/dev/null)
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$CONTAINER_CACHE/containers.conf"
export CONTAINERS_CONF="$CONTAINER_CACHE/containers.conf"
