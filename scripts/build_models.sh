#!/usr/bin/env bash
# Rebuild the shipped models in models/ from scratch (CPU: about 25 minutes for the U-Net).
# Training writes into runs/ (ignored by git); only the final weights and config are copied.
set -euo pipefail
cd "$(dirname "$0")/.."
advseg=.venv/bin/advseg

# the real case's held-out block (slices 20-31) is never trained on: --sample real-train
$advseg train-seg --sample phantom real-train --out runs/unet_default --overwrite --epochs 20 --steps-per-epoch 250 --seed 0
mkdir -p models/unet_default
cp runs/unet_default/config.json runs/unet_default/weights.safetensors models/unet_default/
$advseg eval-seg --model models/unet_default --sample phantom --split test --json runs/unet_default_phantom_test.json
$advseg eval-seg --model models/unet_default --sample real-test --json runs/unet_default_real_test.json
