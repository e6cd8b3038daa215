#!/usr/bin/env bash
# The full-size random-weight benchmarks that matter, on one GPU, in at most 8 minutes (the parts' limits):
#   Music Flamingo (AF3 + Qwen2.5-7B, bf16): prefill of a 30 s clip and decode tokens/s at batch 1/4/8, and
#   with the static KV cache and compiled decoding step at batch 1/8; with int8 weights (the 12 GB preset) at batch 4;
#   AudioLDM2 base: fp32 vs fp16, DPM++ 25 vs DDIM 200, batch 1/4/8, 10 s and 60 s clips, eager vs compiled;
#   AudioLDM2 large: the serving configuration (fp16, DPM++ 25), eager and compiled.
# Each part runs in its own process with its own time budget, so one failure or overrun keeps the others'
# figures; every report is rewritten after each measured row. Reports: bench/results/gpu-*.json and .md
# (and $OUT when that is set, as on the device machine).
#
#   bash bench/gpu.sh                 # with the project's virtual environment or any Python that has its packages
#   GPU_PYTHON=python3 bash bench/gpu.sh
#   GPU_PARTS="audioldm2-base" bash bench/gpu.sh   # some parts only
#
# Where the Python packages are missing (a bare CUDA image), put their wheels in .whl/ first; they are
# installed into /tmp/site without touching the image's own packages.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${GPU_PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RESULTS=bench/results
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

PARTS=${GPU_PARTS:-music-flamingo music-flamingo-int8 audioldm2-base audioldm2-large}

part() {  # name, hard limit in seconds, then fullsize.py arguments (--budget-s stops new cases earlier)
    local name=$1 limit=$2
    shift 2
    [[ " $PARTS " == *" $name "* ]] || return 0
    echo "== $name (at most ${limit} s)"
    timeout --signal=TERM --kill-after=10 "$limit" "$PYTHON" bench/fullsize.py --out "$RESULTS" --name "gpu-$name" "$@"
    echo "== $name: exit $?"
    if [ -n "${OUT:-}" ]; then cp "$RESULTS/gpu-$name".* "$OUT"/ 2>/dev/null || true; fi
}

part music-flamingo 160 --only music-flamingo --budget-s 120 --mf-decoding dynamic,compiled
part music-flamingo-int8 70 --only music-flamingo --budget-s 40 --mf-quantization int8 --mf-batches 4
part audioldm2-base 180 --only audioldm2 --sizes base --long-clip-s 60 --budget-s 140
part audioldm2-large 70 --only audioldm2 --sizes large --long-clip-s 0 --budget-s 40
