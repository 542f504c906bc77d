#!/usr/bin/env bash
# End-to-end check of the CUDA paths (about 6 minutes on one GPU; budget 8):
#   1. every registered method trains in bf16 at 224 px on a generated ImageFolder (TF32/cudnn recorded)
#   2. a run SIGKILLed mid-epoch resumes from its checkpoint and finishes
#   3. eval, predict and export (torch.export .pt) of a finished run
#   4. DDP over NCCL: torchrun on 2 GPUs, or DDP at world size 1 on one GPU
#   5. the speed table (reference matmul 20 x 8192^2, peak reserved memory)
#   6. host syncs per training step (torch.cuda.set_sync_debug_mode)
#   7. the data path's images/s against the adapter step's
#
# usage: benchmarks/gpu_check.sh [--device cuda|cpu] [--smoke] [--precision P] [--out DIR]
#   --device cpu --smoke: the same steps with a tiny ViT at 32 px on the CPU (tests/test_gpu_check.py, marker gpu),
#   in fp32 unless --precision says otherwise (CPUs without native bf16 train ~100x slower in bf16; the bf16
#   start of the adapters is tests/test_adapter.py's)
# env: PYTHON (default: python). Output: DIR/gpu_check.log (default DIR: a new temporary folder); copy it to
# benchmarks/results/gpu_check-<GPU>-<date>.log when run on a GPU machine.
set -euo pipefail

DEVICE=cuda
SMOKE=0
OUT=""
PRECISION=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --precision) PRECISION="$2"; shift 2 ;;
    *) echo "unknown option $1; use --device cuda|cpu, --smoke, --precision P, --out DIR" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STEPS="$PY $HERE/gpu_check_steps.py"
OUT="${OUT:-$(mktemp -d -t adaptertune-gpu-check-XXXXXX)}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export HF_HUB_OFFLINE=1
START=$SECONDS
step() { echo; echo "== [$((SECONDS - START))s] $*"; }

if [[ $SMOKE == 1 ]]; then
  SIZE=32; BATCH=8; EPOCHS=1; NPROC_CPU=2; N_TRAIN=8; N_TEST=2  # 24 train images: 3 steps per epoch
  BACKBONE=(--backbone vit_tiny_patch16_224 --backbone-arg img_size=32 --backbone-arg patch_size=4)
  BACKBONE_JSON='{"name": "vit_tiny_patch16_224", "args": {"img_size": 32, "patch_size": 4}, "pretrained": false}'
  SPEED=(--backbone test_vit --batch-size 8 --steps 2 --warmup 1 --no-memory)
else
  SIZE=224; BATCH=32; EPOCHS=2; NPROC_CPU=2; N_TRAIN=40; N_TEST=8  # 120 train images: 4 steps per epoch
  BACKBONE=(--backbone vit_small_patch16_224)
  BACKBONE_JSON='{"name": "vit_small_patch16_224", "pretrained": false}'
  SPEED=(--backbone vit_small_patch16_224 --backbone-arg img_size=224 --batch-size 64 --steps 10 --warmup 3)
fi
[[ -n $PRECISION ]] || PRECISION=$([[ $DEVICE == cpu ]] && echo fp32 || echo bf16)
DATA="$OUT/data"
COMMON=("${BACKBONE[@]}" --no-pretrained --data-root "$DATA" --val-fraction 0.25 --batch-size "$BATCH"
        --device "$DEVICE" --precision "$PRECISION" --seed 0 --quiet)
"$PY" - <<EOF
import torch
print("torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
      "| bf16 supported", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
EOF
if [[ $DEVICE == cuda* ]]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "FAIL: --device $DEVICE but CUDA is not available; use --device cpu --smoke"; exit 1; }
fi

step "1. generated ImageFolder at $SIZE px"
$STEPS data "$DATA" "$SIZE" "$N_TRAIN" "$N_TEST"

step "2. every method trains in $PRECISION on $DEVICE"
for m in $($STEPS methods); do
  "$PY" -m adaptertune train "${COMMON[@]}" --method "$m" --epochs "$EPOCHS" --out-dir "$OUT/runs/$m"
  $STEPS summary "$OUT/runs/$m" "$PRECISION" "${DEVICE%%:*}"
done

step "3. SIGKILL mid-run (after step 5 of 2 epochs, checkpoints every 2 steps), then --resume"
set +e
"$PY" "$(dirname "$0")/../tests/kill_train_helper.py" 5 "${COMMON[@]}" --method adapter --epochs 2 \
  --out-dir "$OUT/runs/killed" checkpoint_every_steps=2
rc=$?
set -e
[[ $rc == 137 || $rc == -9 ]] || { echo "FAIL: the killed run exited with $rc, not SIGKILL"; exit 1; }
[[ -f "$OUT/runs/killed/checkpoint.safetensors" ]] || { echo "FAIL: no checkpoint to resume from"; exit 1; }
"$PY" -m adaptertune train --resume "$OUT/runs/killed" --quiet
$STEPS summary "$OUT/runs/killed" "$PRECISION" "${DEVICE%%:*}"

step "4. eval, predict, export of runs/adapter"
"$PY" -m adaptertune eval "$OUT/runs/adapter" --device "$DEVICE"
IMAGES=$(find "$DATA/test" -name '*.png' | sort | head -3)
# shellcheck disable=SC2086
"$PY" -m adaptertune predict "$OUT/runs/adapter" $IMAGES --device "$DEVICE" --topk 2
"$PY" -m adaptertune export "$OUT/runs/adapter" --format pt --out "$OUT/adapter.pt"

step "5. DDP"
if [[ $DEVICE == cuda* ]]; then
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
else
  NGPU=0
fi
if [[ $NGPU -ge 2 || $DEVICE == cpu ]]; then
  NPROC=$([[ $DEVICE == cpu ]] && echo "$NPROC_CPU" || echo 2)
  echo "torchrun --nproc-per-node $NPROC ($([[ $DEVICE == cpu ]] && echo gloo || echo nccl))"
  OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --standalone --nproc-per-node="$NPROC" -m adaptertune train \
    "${COMMON[@]}" --method adapter --epochs "$EPOCHS" --out-dir "$OUT/runs/ddp"
  $STEPS summary "$OUT/runs/ddp" "$PRECISION" "${DEVICE%%:*}"
fi
# DDP's reducer at world size 1 (NCCL on CUDA, gloo on CPU): the DDP path on a machine with one GPU
$STEPS ddp1 "{\"backbone\": $BACKBONE_JSON, \"data\": {\"name\": \"imagefolder\", \"root\": \"$DATA\",
  \"val_fraction\": 0.25}, \"method\": \"adapter\", \"train\": {\"epochs\": 1, \"batch_size\": $BATCH,
  \"device\": \"$DEVICE\", \"precision\": \"$PRECISION\"}, \"out_dir\": \"$OUT/runs/ddp1\"}"
$STEPS summary "$OUT/runs/ddp1" "$PRECISION" "${DEVICE%%:*}"

step "6. speed table"
"$PY" -m adaptertune speed "${SPEED[@]}" --methods head,full,adapter,lora --device "$DEVICE" \
  --precision "$PRECISION" --json "$OUT/speed.json"
"$PY" -c "import json; m = json.load(open('$OUT/speed.json'))['machine']; \
print('matmul', m['matmul_size'], 'x', m['matmul_repeats'], ':', round(m['matmul_gflops']), 'GFLOP/s;', \
'max reserved MB', m['max_memory_reserved_mb'])"

step "7. host syncs per training step"
$STEPS syncs "$DEVICE" "$PRECISION" "$BACKBONE_JSON" "$SIZE" "$BATCH" "$([[ $SMOKE == 1 ]] && echo 6 || echo 20)"

step "8. data path (default loader options) vs model"
$STEPS datarate "{\"backbone\": $BACKBONE_JSON, \"data\": {\"name\": \"imagefolder\", \"root\": \"$DATA\",
  \"val_fraction\": 0.25}, \"train\": {\"batch_size\": $BATCH, \"device\": \"${DEVICE%%:*}\"},
  \"out_dir\": \"$OUT/unused\"}" "$OUT/speed.json"

echo
echo "all checks passed in $((SECONDS - START)) s (log: $OUT/gpu_check.log)"
