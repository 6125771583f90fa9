#!/usr/bin/env bash
# Rebuild every shipped file in weights/ from ../shared/data: the three models (three seeds
# each, the median-validation seed shipped) and their evaluation reports. One step at a time:
# on a 2-core CPU parallel runs only slow each other down. Each step is resumable: rerun this
# script after an interruption and finished seeds and models are skipped.
#   bash training/reproduce.sh     (data from ../shared/data/train and ../shared/data/shift-sd198)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# --lr 0.03: the phase-1 head rate chosen on the validation split (the LR range test's
# min/10 suggestion, 0.01, left the head under-trained; training/README.md).
for name in clean robust noise-trained; do
  resume=()
  [ -d "runs/$name" ] && resume=(--resume)
  "$PY" training/train.py --name "$name" --seeds 0 1 2 --lr 0.03 "${resume[@]}"
  "$PY" training/evaluate.py --models "$name"
done
