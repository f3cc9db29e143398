#!/bin/sh
# Baseline-only pilot for the 128x64 study, run before any SAG row: two learning rates, 20 epochs, one seed each,
# judged on training loss and accuracy only (the test lines its runs print at the end were not used). Run from the repository root.
set -e
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
python -m sag make-synthetic --root data/table1_128x64 --train-ids 100 --test-ids 100 --images-per-id 8 --seed 0
COMMON="--dataset synthetic --data-root data/table1_128x64 --synthetic-ids 100 --synthetic-test-ids 100 \
 --synthetic-images-per-id 8 --backbone resnet_small --input-size 128x64 --epochs 20 --batch-size 16 \
 --resident --validation none --test-checkpoint last --eval-every 0 --no-progress --depths none"
mkdir -p runs
for lr in 0.02 0.01; do
  python -m sag train $COMMON --lr $lr --out runs/table1_128x64_pilot/lr$lr > runs/table1_128x64_pilot_lr$lr.log 2>&1 &
done
wait
