#!/usr/bin/env bash
# Rank sweep on the real offline benchmark (serial, one thread).
cd /work/wt/science
export OMP_NUM_THREADS=1 PYTHONPATH=/work/wt/science/src HF_HUB_OFFLINE=1
for seed in 0 1 2; do  # seed-major: two seeds of everything first
  for ds in $DATASETS; do
    for r in 1 4 16 64; do
      out=/tmp/sci/sweep/$ds-r$r-s$seed
      [ -f $out/summary.json ] && grep -q '"success"' $out/summary.json && continue
      /work/main/.venv/bin/python -m adaptertune train --backbone vit_small_patch14_dinov2.imgfocus \
        --backbone-arg img_size=56 --dataset $ds --subset 1024 --test-subset 500 --val-fraction 0 \
        --epochs 1 --batch-size 16 --method adapter --rank $r --seed $seed --num-workers 0 \
        --out-dir $out --overwrite --quiet > $out.log 2>&1
      echo "$(date +%T) $ds r=$r seed=$seed rc=$? $(grep -o '"test_acc": [0-9.]*' $out/summary.json)"
    done
  done
done
