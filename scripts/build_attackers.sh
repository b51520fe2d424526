#!/usr/bin/env bash
# Rebuild Table 1 and the shipped attackers (CPU: about 40 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/advseg sweep --sample phantom --split test --xi 0.5 1.0 1.5 2.0 2.5 3.0 --steps 150 \
  --out runs/sweep --json runs/sweep_rows.json
.venv/bin/python scripts/export_attackers.py runs/sweep
