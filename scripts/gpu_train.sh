#!/usr/bin/env bash
# Time-boxed GPU training runs for the default-model issue, run from benchmarks/gpu_check.sh.
#
#   bash scripts/gpu_train.sh start DEST   # launch the runs in the background, return at once
#   bash scripts/gpu_train.sh finish DEST  # wait for them, pack bundles + logs into DEST
#
# Up to three runs share the GPU (and the machine's cores for their DataLoader workers),
# each stopped by --max-minutes ($HVX_GPU_TRAIN_MINUTES, default 4) with a bundle
# of its best validation epoch; optim.budget_decay lowers the learning rate x0.1
# at 75% of the budget, since the epochs a GPU gets through in that time are not
# known in advance. Same split as the CPU runs (split_by_source, seed 0).
#   paper    the paper's recipe (configs/paper.yaml: stride-1 ConvNeXt, 6ch, UFL +
#            Dice, SAM) with a convnext_atto encoder instead of convnext_small: a
#            convnext_small bundle (55 M params, 111 MB in float16) cannot come
#            back from the device machine (16 MiB a file, 64 MiB a call) nor ship
#            in the package; bfloat16 autocast; 40x CoNSeP.
#   pico     the cpu recipe's architecture family one size up
#            (fast_hr_convnext_pico), from scratch, whole 256 tiles, batch 16.
#   atto-ft  the shipped default (fast_hr_convnext_atto) fine-tuned, whole 256
#            tiles, batch 16 (how the 2026-11-28 default was made).
#   multi    issue 20's recipe (configs/multi_cpu.yaml): the shipped default
#            fine-tuned on CoNSeP + MoNuSeg ($HVX_MONUSEG_DIR, default the
#            "monuseg" folder beside $HVX_CONSEP_DIR) with stain/scanner
#            augmentation, batch 16, lr 4e-4, 4 passes an epoch. MoNuSeg is
#            CC BY-NC-SA 4.0: the model it gives is non-commercial.
#            HVX_GPU_TRAIN_RUNS=multi HVX_GPU_TRAIN_MINUTES=8 bash benchmarks/gpu_check.sh
#   multi-pico  issue 20's capacity candidate (configs/ablation_cpu.yaml with
#            fast_hr_convnext_pico): from scratch on CoNSeP + MoNuSeg, whole 256
#            tiles, batch 16; at equal CPU steps it beat atto on both validations
#            (docs/model-card.md, session 11) and costs 1.3x atto's CPU time.
# The 2026-11-28 session (docs/model-card.md): atto-ft and pico plateau near the
# CPU models; paper was still rising after 306 steps on a shared GPU, so the next
# session should give it the GPU alone: HVX_GPU_TRAIN_RUNS=paper.
# `finish` stores each bundle float16 (scripts/ship_default_model.py and its
# parity check on the sample tiles; float32 when that refuses), best run first,
# while they fit in 46.5 MB, and splits the archive into train.tar.part-* files
# of under 16 MiB (what the device tool brings back). Rejoin:
# `cat train.tar.part-* | tar x`.
set -u
cmd=${1:?usage: gpu_train.sh start|finish DEST}
DEST=${2:?usage: gpu_train.sh start|finish DEST}
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
RUNS=${HVX_GPU_RUNS:-/tmp/hvx-gpu-runs}
MIN=${HVX_GPU_TRAIN_MINUTES:-4}
DATA=${HVX_CONSEP_DIR:?HVX_CONSEP_DIR must name the CoNSeP folder}
DEVICE=${HVX_GPU_TRAIN_DEVICE:-cuda}
# HVX_GPU_TRAIN_EXTRA: more "--set k=v" for every run (a CPU smoke test shrinks them)
# HVX_GPU_TRAIN_RUNS: which runs (default the first three); 14 DataLoader workers shared
RUNS_WANTED=${HVX_GPU_TRAIN_RUNS:-paper pico atto-ft}
MONUSEG=${HVX_MONUSEG_DIR:-$(dirname "$DATA")/monuseg}

launch() { # launch NAME WORKERS ARGS...
    local name=$1 workers=$2
    shift 2
    local data_args=(--data "$DATA")
    [[ $name == multi* ]] && data_args=() # its datasets are in the config (data.datasets)
    mkdir -p "$RUNS"
    OMP_NUM_THREADS=1 "$PY" -m hvx.training.cli "${data_args[@]}" --out "$RUNS/$name" \
        --device "$DEVICE" --max-minutes "$MIN" --no-progress \
        --set num_workers="$workers" --set optim.budget_decay=0.75 \
        --set optim.step_size=100000 --set epochs=100000 --set val_every=1 \
        --set best_metric=pq --preprocess-impl "$IMPL" "$@" ${HVX_GPU_TRAIN_EXTRA:-} >"$RUNS/$name.log" 2>&1 &
    echo $! >"$RUNS/$name.pid"
    echo "launched $name (pid $!)"
}

start() {
    # DataLoader workers pass batches through shared memory: check it holds some.
    local workers=$((14 / $(wc -w <<<"$RUNS_WANTED")))
    if ! timeout 60 "$PY" - <<'EOF'; then
import torch, torch.utils.data as tud
class D(tud.Dataset):
    def __len__(self): return 8
    def __getitem__(self, i): return torch.zeros(4, 256, 256, 3)
for b in tud.DataLoader(D(), batch_size=4, num_workers=2): pass
print("DataLoader workers: ok")
EOF
        echo "DataLoader workers failed: training in the main processes (slower)"
        workers=0
    fi
    # The training input comes from the Triton kernels on CUDA: if they differ from
    # numba's on real tiles (or fail), train on numba's (on the CPU) instead.
    IMPL=auto
    if [[ $DEVICE == cuda* ]] && ! timeout 120 "$PY" - "$DATA" <<'EOF'; then
import sys, torch
from hvx.preprocess import PreprocessConfig, preprocess
from hvx.training.data import load_dataset
x = torch.from_numpy(load_dataset(sys.argv[1]).images[:16]).cuda()
for cfg in (PreprocessConfig(mode="6ch", tile_size=32), PreprocessConfig(mode="6ch")):
    a = preprocess(x, cfg, device="cuda", dtype=torch.float32, impl="triton").cpu()
    b = preprocess(x.cpu(), cfg, dtype=torch.float32, impl="numba")
    print(cfg, "max |triton - numba|", float((a - b).abs().max()))
    assert torch.equal(a, b)
EOF
        echo "Triton preprocessing failed or differs: training with --preprocess-impl numba"
        IMPL=numba
    fi
    local name
    for name in $RUNS_WANTED; do
        case $name in
        paper)
            launch paper "$workers" --config paper --set model.variant=convnext_atto \
                --set data.mpp=0.25 --set preprocess.tile_size=32 --set data.crop_size=256 \
                --set batch_size=16 --set optim.lr=1e-3 --set data.epoch_repeats=2 \
                --set amp=true --set amp_dtype=bfloat16
            ;;
        pico)
            launch pico "$workers" --config cpu --set model.variant=fast_hr_convnext_pico \
                --set data.crop_size=256 --set batch_size=16 --set optim.lr=1e-3 \
                --set data.epoch_repeats=8 --set ckpt_every_steps=0
            ;;
        atto-ft)
            launch atto-ft "$workers" --config cpu --set model.finetune_from=engine/models/default \
                --set data.crop_size=256 --set batch_size=16 --set optim.lr=4e-4 \
                --set loss.np_ce=2.0 --set loss.np_dice=2.0 \
                --set data.epoch_repeats=8 --set ckpt_every_steps=0
            ;;
        multi)
            launch multi "$workers" --config multi_cpu \
                --set "data.datasets=[{path: '$DATA', name: consep}, {path: '$MONUSEG', name: monuseg, tile_size: 320}]" \
                --set batch_size=16 --set optim.lr=4e-4 --set data.epoch_repeats=4 \
                --set ckpt_every_steps=0
            ;;
        multi-pico)
            launch multi-pico "$workers" --config ablation_cpu \
                --set model.variant=fast_hr_convnext_pico \
                --set "data.datasets=[{path: '$DATA', name: consep}, {path: '$MONUSEG', name: monuseg, tile_size: 320}]" \
                --set data.crop_size=256 --set batch_size=16 --set data.epoch_repeats=4 \
                --set ckpt_every_steps=0
            ;;
        *)
            echo "HVX_GPU_TRAIN_RUNS: unknown run '$name' (expected paper, pico, atto-ft, multi, multi-pico)" >&2
            return 2
            ;;
        esac
    done
}

finish() {
    local name pid waited=0 limit
    limit=$(awk -v m="$MIN" 'BEGIN { print int(m * 60 + 150) }')
    for name in $RUNS_WANTED; do
        pid=$(cat "$RUNS/$name.pid" 2>/dev/null) || continue
        while kill -0 "$pid" 2>/dev/null && ((waited < limit)); do
            sleep 2
            waited=$((waited + 2))
        done
        if kill -0 "$pid" 2>/dev/null; then # past its budget + 150 s: SIGTERM checkpoints it
            kill -TERM "$pid" # (SIGINT: ignored by background jobs of a script)
            sleep 10
        fi
        echo "=== $name: $(tail -n 3 "$RUNS/$name.log" | tr '\n' ' ')"
    done
    "$PY" scripts/pack_runs.py "$RUNS" "$DEST" --budget-mb 46.5
}

case $cmd in
start) start ;;
finish) finish ;;
*)
    echo "usage: gpu_train.sh start|finish DEST" >&2
    exit 2
    ;;
esac
