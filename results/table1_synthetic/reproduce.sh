#!/bin/sh
# The synthetic Table 1 study (resnet18, 64x32, CPU). Run from the repository root; resumable: run it again to continue.
# Two ablate processes with one torch thread each share the rows (one per core): first seeds 0-2 of every row, then
# seeds 3-4. A last ablate call (which skips every finished run) writes the tables, the figure and the attention
# mass over all runs. Each run is deterministic for its seed, so which process trains it, and when, does not matter.
set -e
export OMP_NUM_THREADS=1
python -m sag make-synthetic --root data/table1_synthetic --train-ids 100 --test-ids 100 --images-per-id 8 --seed 0
COMMON="--dataset synthetic --data-root data/table1_synthetic --synthetic-ids 100 --synthetic-test-ids 100 \
 --synthetic-images-per-id 8 --backbone resnet18 --input-size 64x32 --epochs 12 --batch-size 16 --lr 0.001 \
 --val-ids 0 --eval-every 0 --out runs/table1_synthetic --no-progress --mass-images 0"
mkdir -p runs
python -m sag ablate $COMMON --seeds 3 --rows baseline,D4,D1,D2 > runs/table1_a.log 2>&1 &
sleep 20  # let the first process write the ablation manifest
python -m sag ablate $COMMON --seeds 3 --rows D3,D1,2,D1,2,3,D1,2,3,4 > runs/table1_b.log 2>&1 &
wait
python -m sag ablate $COMMON --seeds 5 --rows baseline,D4,D1,D2,D1,2,3 > runs/table1_c.log 2>&1 &
python -m sag ablate $COMMON --seeds 5 --rows D3,D1,2,D1,2,3,4 > runs/table1_d.log 2>&1 &
wait
python -m sag ablate $COMMON --seeds 5 --rows table1 --mass-images 200  # tables, figure, attention mass
