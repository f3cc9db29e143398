#!/bin/sh
# The synthetic Table 1 study at 128x64 (resnet_small, CPU): grids D1 32x16, D2 16x8, D3 8x4, D4 4x2 (8 cells).
# Run from the repository root; resumable: run it again to continue. Two ablate processes with one torch thread each
# share the rows (one per core): phase 1 trains seeds 0-2 of every row, phase 2 seeds 3-4. A last ablate call (which
# skips every finished run) writes the tables, the figure and the attention mass over all runs. Each run is
# deterministic for its seed, so which process trains it, and when, does not matter.
set -e
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
date -u +%Y-%m-%dT%H:%M:%SZ >> runs/table1_128x64_times.log
python -m sag make-synthetic --root data/table1_128x64 --train-ids 100 --test-ids 100 --images-per-id 8 --seed 0
COMMON="--dataset synthetic --data-root data/table1_128x64 --synthetic-ids 100 --synthetic-test-ids 100 \
 --synthetic-images-per-id 8 --backbone resnet_small --input-size 128x64 --epochs 20 --batch-size 16 --lr 0.01 \
 --resident --validation none --test-checkpoint last --eval-every 0 --out runs/table1_128x64 --no-progress --mass-images 0"
mkdir -p runs
nice -n 10 python -m sag ablate $COMMON --seeds 3 --rows baseline,D1,D3 > runs/table1_128x64_a.log 2>&1 &
sleep 20  # let the first process write the ablation manifest
nice -n 10 python -m sag ablate $COMMON --seeds 3 --rows D4,D2 > runs/table1_128x64_b.log 2>&1 &
wait
nice -n 10 python -m sag ablate $COMMON --seeds 5 --rows baseline,D1,D3 > runs/table1_128x64_c.log 2>&1 &
nice -n 10 python -m sag ablate $COMMON --seeds 5 --rows D4,D2 > runs/table1_128x64_d.log 2>&1 &
wait
date -u +%Y-%m-%dT%H:%M:%SZ >> runs/table1_128x64_times.log
python -m sag ablate $COMMON --seeds 5 --rows baseline,D1,D2,D3,D4 --mass-images 200  # tables, figure, mass
