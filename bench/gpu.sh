#!/usr/bin/env bash
# What is served, timed on one GPU with full-size random weights, in at most 8 minutes (the parts' limits add up to
# 460 s, plus installing the wheels). The parts, each in processes of its own with its own time limit, so one
# failure or overrun keeps the others' figures (a part that runs out of budget lists the rows it skipped):
#   audioldm2-base, audioldm2-large  fp16, DPM++ 25, batch 1/4/8, 10 s and 60 s clips, through the runner's step
#                                    scheduler, with the time of each phase (bench/fullsize.py --serving-only;
#                                    COMPILE=none,reduce-overhead,... times AUDIO_STUDIO_AUDIOLDM2_COMPILE's modes
#                                    too, each after its start-up warm-up: minutes, more than these limits hold)
#   music-flamingo                   dynamic against compiled decoding at batch 1 and 8, prefill of a 30 s clip
#   serving                          one `bentoml serve` of AudioLDM2 base and Music Flamingo at full size, random
#                                    weights (profile `random`), at concurrency 1 and 8: HTTP against the same jobs
#                                    in-process on the same GPU (bench/serving.py --gpu --one-server); Music
#                                    Flamingo decodes `dynamic` here and in presets: the CUDA default, compiled,
#                                    warms up for minutes at each start (music-flamingo times it)
#   presets                          peak GPU memory of each deploy/presets/*.env, one batch per runner
#                                    (bench/preset_memory.py)
# serving and presets first write the `random` profile's folders (bench/fullsize.py --write-random) unless there.
# Reports: bench/results/gpu-*.json and .md (a dry run: bench/out/gpu-dry-run/; or --out DIR); with $OUT set also
# $OUT/gpu-results.tar (every report so far, rewritten after each part) and the whole log, $OUT/gpu.log.
#
#   bash bench/gpu.sh                                # on the GPU machine (device call: carry .whl)
#   bash bench/gpu.sh --dry-run                      # any CPU: every part on tiny models, few steps and tokens (CI)
#   GPU_PARTS="serving presets" bash bench/gpu.sh    # some parts only
#   GPU_PYTHON=python3 bash bench/gpu.sh             # another Python (default: .venv/bin/python, else python3)
#
# Where packages are missing (the GPU image), `.venv/bin/python bench/gpu_wheels.py` here puts their wheels in .whl/
# first; they are installed into /tmp/site without touching the image's own packages.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=false
RESULTS=
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY_RUN=true ;;
        --out) RESULTS=$2; shift ;;
        *) echo "usage: bash bench/gpu.sh [--dry-run] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
# A dry run's reports have the real run's names: by default they go where nothing is committed.
RESULTS=${RESULTS:-$($DRY_RUN && echo bench/out/gpu-dry-run || echo bench/results)}
PYTHON=${GPU_PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PARTS=${GPU_PARTS:-audioldm2-base audioldm2-large music-flamingo serving presets}
COMPILE=${COMPILE:-none}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$RESULTS"
if [ -n "${OUT:-}" ]; then exec > >(tee "$OUT/gpu.log") 2>&1; fi

if $DRY_RUN; then  # the same parts and code on a CPU: tiny models, 2 steps, a few tokens; static for compiled
    SLOWER=3  # limits and budgets are sized for the GPU run; a CPU (CI's 2 cores) takes longer for tiny models
    SIZE=(--smoke --device cpu)
    SERVING=(--smoke --one-server)
    PRESETS=(--smoke)
    DECODING=dynamic,static
    MF_BATCHES=1,2
    RANDOM_DIR=$(mktemp -d)
    trap 'rm -rf "$RANDOM_DIR"' EXIT
else
    SLOWER=1
    SIZE=()
    SERVING=(--gpu --one-server)
    PRESETS=()
    DECODING=dynamic,compiled
    MF_BATCHES=1,8
    RANDOM_DIR=/tmp/audio-studio-random-models
fi
if ! $DRY_RUN && compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
"$PYTHON" -c 'import sys, torch, transformers, diffusers, bentoml  # what the parts will import
print(sys.version.split()[0], *(f"{m.__name__} {m.__version__}" for m in (torch, transformers, diffusers, bentoml)))'

FAILED=()

budget() {  # a part's --budget-s: start no new case after this many seconds (of the GPU run)
    echo $(($1 * SLOWER))
}

run() {  # name, hard limit in seconds, then the command; the time limit and the exit status are the part's
    local name=$1 limit=$(($2 * SLOWER))
    shift 2
    echo "== $name (at most ${limit} s)"
    local started=$SECONDS
    timeout --signal=TERM --kill-after=30 "$limit" "$@"  # 30 s: a server is stopped on TERM (bench/served.py)
    local status=$?
    echo "== $name: exit $status after $((SECONDS - started)) s"
    [ $status -eq 0 ] || FAILED+=("$name")
    if [ -n "${OUT:-}" ]; then (cd "$RESULTS" && tar -cf "$OUT/gpu-results.tar" gpu-*); fi
    return $status
}

part() {  # name, hard limit in seconds, then bench/fullsize.py arguments (--budget-s stops new cases earlier)
    local name=$1 limit=$2
    shift 2
    [[ " $PARTS " == *" $name "* ]] || return 0
    run "$name" "$limit" "$PYTHON" bench/fullsize.py "${SIZE[@]}" --out "$RESULTS" --name "gpu-$name" "$@"
}

served_part() {  # name, hard limit, then the script and its arguments: on the `random` profile's folders
    local name=$1 limit=$2
    shift 2
    [[ " $PARTS " == *" $name "* ]] || return 0
    if [ ! -d "$RANDOM_DIR/cvssp/audioldm2" ] || [ ! -d "$RANDOM_DIR/nvidia/music-flamingo-hf" ]; then
        run random-weights 40 "$PYTHON" bench/fullsize.py "${SIZE[@]}" --write-random "$RANDOM_DIR" \
            --out "$RESULTS" --name gpu-random-weights || return 1
    fi
    run "$name" "$limit" env AUDIO_STUDIO_PROFILE=random AUDIO_STUDIO_RANDOM_MODEL_DIR="$RANDOM_DIR" \
        AUDIO_STUDIO_MUSIC_FLAMINGO_DECODING=dynamic "$PYTHON" "$@" --out "$RESULTS" --name "gpu-$name"
}

AUDIOLDM2=(--only audioldm2 --serving-only --compile "$COMPILE" --long-clip-s 60)
part audioldm2-base 80 "${AUDIOLDM2[@]}" --sizes base --budget-s "$(budget 65)"
part audioldm2-large 35 "${AUDIOLDM2[@]}" --sizes large --budget-s "$(budget 20)"
part music-flamingo 90 --only music-flamingo --mf-decoding "$DECODING" --mf-batches "$MF_BATCHES" --mf-new-tokens 128 \
    --budget-s "$(budget 70)"
served_part serving 170 bench/serving.py "${SERVING[@]}"
served_part presets 45 bench/preset_memory.py "${PRESETS[@]}" --budget-s "$(budget 30)"

if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed or over their limit: ${FAILED[*]}"
    exit 1
fi
