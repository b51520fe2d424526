#!/usr/bin/env bash
# Build the shipped models for scans unlike the training data (issue 12): a U-Net trained with
# domain augmentation on the phantom only (unet_general: the real case is out of sample), one
# trained the same way with the real case's training slices (unet_general_real), and an attacker
# against each (D+V, xi 2, Table 1's settings, 100 steps). About 75 minutes on 2 CPU cores.
# Training writes into runs/general (ignored by git); only weights and configs are copied to
# models/, with cards that scripts/write_general_cards.py writes from the evaluations.
# EPOCHS, SPE (steps per epoch), STEPS, SUBJECTS, OUT and EXPORT=0 make a quick trial run, e.g.
#   EPOCHS=1 SPE=2 STEPS=2 SUBJECTS=6 OUT=/tmp/general EXPORT=0 bash scripts/build_general_models.sh
set -euo pipefail
cd "$(dirname "$0")/.."
advseg=.venv/bin/advseg
OUT=${OUT:-runs/general}
SUBJECTS=(--subjects "${SUBJECTS:-150}")
SETTINGS=(--xi 2 --gradient-penalty 10 --per-organ --diversity-weight 0.3 --diversity-cap-v 0.02
  --steps "${STEPS:-100}")
build() {  # NAME, then the samples of its training data
  local name=$1
  shift
  $advseg train-seg --sample "$@" "${SUBJECTS[@]}" --domain-augment --out "$OUT/$name" --overwrite \
    --epochs "${EPOCHS:-10}" --steps-per-epoch "${SPE:-250}" --seed 0
  $advseg eval-seg --model "$OUT/$name" --sample phantom "${SUBJECTS[@]}" --split test --json "$OUT/${name}_phantom_test.json"
  $advseg eval-seg --model "$OUT/$name" --sample real --bootstrap 2000 --json "$OUT/${name}_real.json"
  $advseg eval-seg --model "$OUT/$name" --sample real-test --bootstrap 2000 \
    --json "$OUT/${name}_real_test.json"
  $advseg train-attack --model "$OUT/$name" --sample "$@" "${SUBJECTS[@]}" "${SETTINGS[@]}" \
    --out "$OUT/attacker_dv_xi2_$name" --overwrite
  $advseg sweep --model "$OUT/$name" --sample real --attackers "$OUT/attacker_dv_xi2_$name" \
    --headline-xi 2 --out "$OUT/attack_real_$name" --overwrite
  if [[ "${EXPORT:-1}" == 1 ]]; then
    mkdir -p "models/$name"
    cp "$OUT/$name/config.json" "$OUT/$name/weights.safetensors" "models/$name/"
    .venv/bin/python -c "import sys; from napari_advseg.training.attacker_io import export_attacker; export_attacker(*sys.argv[1:])" \
      "$OUT/attacker_dv_xi2_$name" "models/attacker_dv_xi2_$name"
  fi
}
build unet_general phantom
build unet_general_real phantom real-train
if [[ "${EXPORT:-1}" == 1 ]]; then
  .venv/bin/python scripts/write_general_cards.py "$OUT"
fi
