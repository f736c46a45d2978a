#!/usr/bin/env bash
# One prepared GPU session for hvx: set up, run the CUDA tests, benchmark every stage.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a CUDA machine
#
# Writes everything under ONE folder: $OUT when set (the device tool), else
# benchmarks/results/gpu-<UTC date>/. At most 8 files, so all of them come back
# from the device tool (it returns 8 files at most):
#   env.txt           nvidia-smi, python, torch/triton/CUDA versions, hvx features
#   steps.tsv         step, exit code, seconds, time limit (124 = killed by its limit)
#   gpu_check.log     every step's output, in order
#   bench-gpu-<date>-kernels.json   hvx-bench: preprocess, postprocess, metrics
#   bench-gpu-<date>-network.json   hvx-bench: network, e2e (the default's variant + convnext_small)
#   bench-gpu-<date>-default.json   hvx-bench: network, e2e with the trained default model
#                                   (not with HVX_GPU_TRAIN_MINUTES: 8 files at most)
#   bench-gpu-<date>-hovernet.json  hvx-bench: published HoVer-Net fast end to end vs the
#                                   official code (needs it: $HVX_HOVERNET_REFERENCE, else
#                                   ./.gpudata/hover_net, carried; and matplotlib). Not with
#                                   HVX_GPU_TRAIN_MINUTES either.
#   train.tar.part-*  with HVX_GPU_TRAIN_MINUTES set: scripts/gpu_train.sh's runs (<= 3 files)
# Copy the JSON files into benchmarks/results/ and run benchmarks/summarize.py.
#
# Budget: well under 10 minutes. Each step runs under `timeout` with its own
# limit, capped by what is left of HVX_GPU_CHECK_BUDGET (default 540 s); a step
# that fails or runs out of time is recorded and the next one still runs.
# hvx-bench saves its JSON after every stage, so a step cut short keeps the
# stages it finished.
#
# Environment on a bare GPU machine (torch, triton, timm, numba, opencv, scipy,
# pybind11 present; hvx maybe not): `pip install --no-deps --no-build-isolation -e .`
# builds hvx._native in place. Missing small packages can travel as wheels in
# ./.whl (see the device tool's README); they are installed with --no-index.
# Real tiles: $HVX_CONSEP_DIR, else ./.gpudata/consep (copy shared/data/consep
# there and carry it: `../shared` does not travel), else shared/data/consep beside
# the checkout or any folder above it.
# Without them the CoNSeP tests skip and the bench stages fail with a clear
# error (recorded in the JSON): hvx-bench never benchmarks synthetic pixels.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
DATE=$(date -u +%Y-%m-%d)
DEST=${OUT:-$ROOT/benchmarks/results/gpu-$DATE}
mkdir -p "$DEST"
PY=${PYTHON:-python3}
BUDGET=${HVX_GPU_CHECK_BUDGET:-540}
START=$(date +%s)
LOG=$DEST/gpu_check.log
STEPS=$DEST/steps.tsv
export PYTHONUNBUFFERED=1
: >"$LOG"
printf 'step\trc\tseconds\tlimit_s\n' >"$STEPS"

# step NAME LIMIT_S CMD...: runs CMD under timeout, logs it, never aborts the script.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START) - 5))
    if ((left < 20)); then
        printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >>"$STEPS"
        echo "=== $name: skipped (budget spent)" | tee -a "$LOG"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$limit" >>"$STEPS"
    echo "=== $name: exit $rc after $(($(date +%s) - t0))s" | tee -a "$LOG"
    return 0
}

# ------------------------------------------------------------------ environment
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    "$PY" - <<'EOF' 2>&1
import platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("torch", "triton", "timm", "numba", "cv2", "scipy", "skimage", "onnxruntime",
             "safetensors", "yaml", "tqdm", "pybind11", "pytest", "tensorrt"):
    try:
        mod = __import__(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except Exception as err:
        print(f"{name} MISSING ({type(err).__name__}: {err})")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
EOF
} >"$DEST/env.txt"
cat "$DEST/env.txt" >>"$LOG"

if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
    step wheels 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/hvx-site "$ROOT"/.whl/*.whl
    export PYTHONPATH=/tmp/hvx-site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import hvx._native, hvx.bench" >/dev/null 2>&1; then
    export MAX_JOBS=${MAX_JOBS:-16}
    step install 150 "$PY" -m pip install --no-deps --no-build-isolation -e "$ROOT"
fi
if ! "$PY" -c "import hvx._native, hvx.bench" >/dev/null 2>&1; then
    # Fallback (e.g. a setuptools too old for pyproject.toml): build in place and
    # put an `hvx` -> engine/ link on the path (hvx.training is then missing).
    step build-inplace 120 "$PY" setup.py build_ext --inplace
    mkdir -p /tmp/hvx-shim && ln -sfn "$ROOT/engine" /tmp/hvx-shim/hvx
    export PYTHONPATH=/tmp/hvx-shim${PYTHONPATH:+:$PYTHONPATH}
fi
step import 30 "$PY" -c "import hvx, hvx._native, hvx.bench; from hvx.features import features; print(features())"

if [[ -z ${HVX_CONSEP_DIR:-} ]]; then
    dir=$ROOT
    cands=("$ROOT/.gpudata/consep")
    while [[ $dir != / ]]; do # shared/data/consep beside the checkout or any folder above
        cands+=("$dir/shared/data/consep")
        dir=$(dirname "$dir")
    done
    for cand in "${cands[@]}"; do
        if [[ -d $cand/images ]]; then
            export HVX_CONSEP_DIR=$cand
            break
        fi
    done
fi
echo "HVX_CONSEP_DIR=${HVX_CONSEP_DIR:-<none: real-tile tests skip, bench stages fail>}" | tee -a "$LOG"

# ------------------------------------------------------------------ training (optional)
# HVX_GPU_TRAIN_MINUTES=4: three time-boxed training runs (scripts/gpu_train.sh) share
# the GPU while the CUDA tests run; packed into train.tar.part-* before the benchmarks
# (which then have the GPU to themselves).
TRAIN=0
if [[ -n ${HVX_GPU_TRAIN_MINUTES:-} && -n ${HVX_CONSEP_DIR:-} ]]; then
    TRAIN=1
    step train-start 90 bash scripts/gpu_train.sh start "$DEST"
fi

# ------------------------------------------------------------------ GPU tests
# Triton CLAHE/colour kernels vs the OpenCV reference on CUDA, torch fp16 parity, features.
step pytest-cuda 120 "$PY" -m pytest -m cuda -q -p no:cacheprovider --continue-on-collection-errors \
    -W ignore::DeprecationWarning tests

# Does fp16 keep the default model's instance maps on this GPU? (hvx.precision; on
# the CPU it does not: PQ 0.85 against fp32.) Engine.load(precision="auto") acts on it.
step fp16-check 60 "$PY" -c "from hvx.bundle import load_bundle; from hvx.assets import \
default_model_path as d; from hvx.precision import check_fp16; b = load_bundle(d()); \
print(check_fp16(b.build_model(), b.preprocess, b.postprocess, device='cuda'))"

# The accuracy gate (hvx.backends.quantize: pooled PQ >= 0.98 against fp32, class flips
# <= 1% of matched nuclei) for torch fp16 and bf16 on this GPU, on the CoNSeP validation
# tiles of the default model, with the paired fp32/fp16/bf16 network ratio (issue 24).
step precision-gate 90 "$PY" benchmarks/gpu_gate.py --device cuda --precisions fp16 bf16 \
    ${HVX_CONSEP_DIR:+--data "$HVX_CONSEP_DIR"} --rounds 10

if ((TRAIN)); then
    # capped by the budget left; gpu_train.sh stops runs past their own budget + 150 s
    step train-finish 600 bash scripts/gpu_train.sh finish "$DEST"
fi

# ------------------------------------------------------------------ benchmarks
# Kernels first (cheap); then the network and end to end (the expensive part).
step bench-kernels 90 "$PY" -m hvx.bench --device cuda --stages preprocess,postprocess,metrics \
    --batch 1,8,32 --repeats 3 --json "$DEST/bench-gpu-$DATE-kernels.json"
# the default model's variant first, then the paper's
step bench-network 150 "$PY" -m hvx.bench --device cuda --stages network,e2e \
    --variant fast_hr_convnext_atto,convnext_small --batch 1,8,32 --repeats 3 \
    --json "$DEST/bench-gpu-$DATE-network.json"

# end to end with the trained default model (real nuclei counts, so post-processing's
# share is real), paired against the baseline pipeline. Not with training on: its
# train.tar.part-* files would take the file count past the 8 that come back.
if ((TRAIN)); then
    echo "=== bench-e2e-default skipped: training files use the result slots" | tee -a "$LOG"
else
    step bench-e2e-default 120 "$PY" -m hvx.bench --device cuda --stages network,e2e \
        --model engine/models/default --batch 1,8,32 --repeats 5 \
        --json "$DEST/bench-gpu-$DATE-default.json"
    # the published HoVer-Net (fast) vs the official pipeline, same GPU, same tiles
    if [[ -z "${HVX_HOVERNET_REFERENCE:-}" && -d "$ROOT/.gpudata/hover_net" ]]; then
        export HVX_HOVERNET_REFERENCE="$ROOT/.gpudata/hover_net"
    fi
    step bench-hovernet 120 "$PY" -m hvx.bench --device cuda --stages hovernet \
        --batch 1,8 --repeats 3 --json "$DEST/bench-gpu-$DATE-hovernet.json"
fi

echo "=== done in $(($(date +%s) - START))s; results in $DEST" | tee -a "$LOG"
column -t "$STEPS" 2>/dev/null || cat "$STEPS"
