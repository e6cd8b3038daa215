#!/usr/bin/env bash
# Build the CPU image of the Bento with podman: a Debian bookworm base from mmdebstrap, `bentoml build` (tiny
# profile, offline), then the Bento's own Dockerfile rendered for that base (dockerfile.py). pip's configuration
# and CA bundle reach the build as read-only volumes, never as a layer. Prints the image name on its last line.
#   deploy/container/build.sh [IMAGE]        (default localhost/audio-studio:cpu)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
IMAGE=${1:-localhost/audio-studio:cpu}
UV_VERSION=0.13.9  # the uv the Bento's Dockerfile would otherwise `pip install` into the image
# shellcheck source=deploy/container/podman.sh
. deploy/container/podman.sh
CACHE=$CONTAINER_CACHE

# 1. The Bento, offline: the tiny profile declares no checkpoint, so nothing touches the hub.
export BENTOML_HOME="$CACHE/bentoml"
rm -rf "$BENTOML_HOME/bentos"
tag=$(AUDIO_STUDIO_PROFILE=tiny "$PYTHON" -m bentoml build -o tag | sed -n 's/^__tag__://p')
bento="$BENTOML_HOME/bentos/${tag%%:*}/${tag#*:}"

# 2. The base: Debian's Python 3.11, the C++ and OpenMP runtimes that manylinux wheels expect of the system, the
#    bentofile's system packages and uv; no compiler. Cached by its recipe.
packages="python3,ca-certificates,passwd,libstdc++6,libgomp1,$("$PYTHON" deploy/container/dockerfile.py packages "$bento")"
base="localhost/audio-studio-base:bookworm-$(printf '%s %s' "$packages" "$UV_VERSION" | sha256sum | cut -c1-12)"
if ! podman image exists "$base"; then
    rm -rf "$CACHE/uv-wheel" && "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/uv-wheel" "uv==$UV_VERSION"
    "$PYTHON" -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); n = next(n for n in z.namelist() if n.endswith("/scripts/uv")); open(sys.argv[2], "wb").write(z.read(n))' \
        "$CACHE"/uv-wheel/uv-*.whl "$CACHE/uv"
    chmod 755 "$CACHE/uv"
    mmdebstrap --quiet --variant=essential --include="$packages" \
        --customize-hook="copy-in $CACHE/uv /usr/local/bin" bookworm "$CACHE/base.tar"
    podman import --quiet "$CACHE/base.tar" "$base" >/dev/null
    rm -f "$CACHE/base.tar"
fi

# 3. What uv needs to reach the registries pip reaches here.
pip_get() { "$PYTHON" -m pip config get "$1" 2>/dev/null || true; }
find_links=${PIP_FIND_LINKS:-$(pip_get global.find-links)}
extra_index=${PIP_EXTRA_INDEX_URL:-$(pip_get global.extra-index-url)}
index=${PIP_INDEX_URL:-$(pip_get global.index-url)}
cert=${PIP_CERT:-$(pip_get global.cert)}
volumes=(-v "$CACHE/uv.toml:/etc/uv/uv.toml:ro" -v "$CACHE/uv-cache:/root/.cache/uv:z")
[ -n "$cert" ] && volumes+=(-v "$cert:/etc/ssl/certs/ca-certificates.crt:ro")
toml_list() { local out="" v; for v in "$@"; do out+="\"$v\", "; done; printf '[%s]' "${out%, }"; }
for location in $find_links $extra_index; do
    path=${location#file://}
    [ "${path##*/}" = simple ] && path=${path%/simple}  # a local index links to files beside simple/
    if [ -d "$path" ]; then volumes+=(-v "$path:$path:ro"); fi
done
mkdir -p "$CACHE/uv-cache"
{
    echo 'system-certs = true'
    echo 'link-mode = "copy"'
    echo 'index-strategy = "unsafe-best-match"'  # pip's behaviour: the best version over every index
    # CPU image: triton (1 GB) only serves CUDA kernels; xgrammar, which requires it, imports it only if present.
    echo 'exclude-dependencies = ["triton"]'
    # shellcheck disable=SC2086
    [ -n "$find_links" ] && echo "find-links = $(toml_list $find_links)"
    # shellcheck disable=SC2086
    [ -n "$extra_index" ] && echo "extra-index-url = $(toml_list $extra_index)"
    [ -n "$index" ] && echo "index-url = \"$index\""
} >"$CACHE/uv.toml"

# The layer cache cannot see the mounted uv.toml: a label with its digest on top of the base makes a changed one
# a different parent image, so every layer above it is rebuilt (and an unchanged one reuses them all).
parent="$base-uv-$(sha256sum <"$CACHE/uv.toml" | cut -c1-12)"
if ! podman image exists "$parent"; then
    mkdir -p "$CACHE/parent" && printf 'FROM %s\nLABEL org.audio-studio.uv-config=%s\n' "$base" "${parent##*-}" >"$CACHE/parent/Containerfile"
    podman build -q -t "$parent" "$CACHE/parent" >/dev/null
fi
"$PYTHON" deploy/container/dockerfile.py dockerfile "$bento" "$parent" >"$CACHE/Dockerfile.cpu"

start=$(date +%s)
podman build --layers "${volumes[@]}" -f "$CACHE/Dockerfile.cpu" -t "$IMAGE" "$bento" >"$CACHE/build.log" 2>&1 ||
    { tail -40 "$CACHE/build.log" >&2; exit 1; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE from $tag on $parent: $((size / 1000000)) MB, podman build $(($(date +%s) - start)) s" >&2
echo "$IMAGE"
