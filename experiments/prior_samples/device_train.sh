#!/usr/bin/env bash
# The embedded prior's recipe (conf/prior/embedded.yaml) with a GPU's steps: one device run.
#
# Why: on this project's 2 CPU cores the prior gets ~10^3-10^4 steps of batch 64 and its samples
# lack the data's stripes and checkers (docs/research/prior_samples.md); diffusion priors usually
# get 10^5.
# The device machine has torch and lightning but not diffusers, hydra-core or omegaconf, and
# nothing can be fetched there, so carry their wheels. Prepare once, on this machine:
#   .venv/bin/python -m pip download --no-deps -d .wheels diffusers==0.42.1 hydra-core==1.3.8 \
#       omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
# (The driver is train_embedded.py, not `python -m singexp +experiment=train_prior`: it needs only
# those packages; the command line's run also sets up loggers, metrics and config checks whose
# packages were not checked on the device.)
# Then the device tool: command "bash experiments/prior_samples/device_train.sh",
# carry [".wheels"], timeout_s 600 (MINUTES=7 of training leaves time for start-up and export).
# What comes back under $OUT: prior/ (EMA weights, diffusers folder: quality.py and
# docs/research/prior_samples/make_grids.py read it), metrics.csv (loss per 20 steps), last.png
# (the last validation grid). Checkpoints stay behind (40 MB, over the tool's 16 MB per file); a
# later run fine-tunes from the exported weights (docs/research/prior_samples/finetune_low_lr.py).
# Knobs: MINUTES, BATCH, LR, ACCELERATOR, PRECISION, WORKERS, SKIP_PIP=1 (packages already there).
set -euo pipefail
OUT=${OUT:-outputs/device}
if [ "${SKIP_PIP:-0}" != 1 ]; then
  python3 -m pip install -q --no-deps --no-index --no-build-isolation .wheels/*
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L
PY=${PYTHON:-python3}
PYTHONPATH=src "$PY" experiments/prior_samples/train_embedded.py "$OUT/run" \
  --accelerator "${ACCELERATOR:-gpu}" --precision "${PRECISION:-bf16-mixed}" \
  --batch "${BATCH:-256}" ${LR:+--lr "$LR"} --workers "${WORKERS:-14}" --steps "${STEPS:-200000}" \
  --max-time "00:00:$(printf %02d "${MINUTES:-7}"):00" --val-every "${VAL_EVERY:-2000}"
cp -r "$OUT/run/prior" "$OUT/prior"
cp "$OUT/run/csv/version_0/metrics.csv" "$OUT/metrics.csv"
last=$(ls "$OUT/run/samples"/*.png 2>/dev/null | tail -1 || true)
[ -n "$last" ] && cp "$last" "$OUT/last.png"
rm -rf "$OUT/run"
ls -R "$OUT"
