#!/usr/bin/env bash
# Rebuild Table 1 and the shipped attackers on 2 CPU cores (about 75 minutes): eight attackers
# trained in two single-threaded queues side by side, then one `advseg sweep` that evaluates them
# on the phantom test split. `advseg sweep ... --steps 400` with the same settings trains the same
# attackers one after another instead.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/sweep
SETTINGS=(--steps 400 --gradient-penalty 10 --per-organ --diversity-weight 0.3
  --diversity-cap-v 0.02 --sample phantom --split train)
train() {  # mode xi
  OMP_NUM_THREADS=1 .venv/bin/advseg train-attack --mode "$1" --xi "$2" "${SETTINGS[@]}" \
    --out "$OUT/attackers/$1_xi$2" --overwrite > "$OUT/train_$1_xi$2.log" 2>&1
}
mkdir -p "$OUT/attackers"
(train dv 3; train dv 2; train dv 1; train d 2) &
(train dv 2.5; train dv 1.5; train dv 0.5; train v 2) &
wait
.venv/bin/advseg sweep --sample phantom --split test --out "$OUT" --json runs/sweep_rows.json \
  --attackers "$OUT"/attackers/*
.venv/bin/python scripts/export_attackers.py "$OUT"
