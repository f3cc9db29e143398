#!/bin/sh
# The synthetic Table 1 study (resnet18, 64x32, CPU). Run from the repository root; resumable: run it again to continue.
# One thread: on a shared 2-core machine small convolutions ran ~10x faster on 1 thread than on 2.
set -e
export OMP_NUM_THREADS=1
COMMON="--dataset synthetic --data-root data/table1_synthetic --synthetic-ids 30 --synthetic-test-ids 20 \
 --synthetic-images-per-id 8 --backbone resnet18 --input-size 64x32 --epochs 4 --batch-size 16 --lr 0.001 \
 --val-ids 0 --eval-every 0 --seeds 3 --out runs/table1_synthetic --no-progress"
python -m sag ablate $COMMON --rows baseline,D4 --mass-images 0   # the headline pair first
python -m sag ablate $COMMON --rows table1 --mass-images 200      # then every Table 1 row (+ attention mass)
