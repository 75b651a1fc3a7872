#!/usr/bin/env bash
# The reference model's training run (model card: benchmarks/reference_model/README.md).
# Re-running it resumes from benchmarks/reference_model/run/checkpoint if a run was stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
DATA=benchmarks/corpora/data
test -f $DATA/bible/train.tsv -a -f $DATA/sysmsg/train.tsv || $BIN/python -m benchmarks.corpora build all
RUN=benchmarks/reference_model/run
RESUME=""; test -d $RUN/checkpoint && RESUME=--resume
$BIN/mtedge pretrain \
  --train $DATA/bible/train.tsv --train $DATA/sysmsg/train.tsv \
  --dev $DATA/bible/dev.tsv --dev $DATA/sysmsg/dev.tsv \
  -o $RUN $RESUME \
  --vocab-size 8000 --d-model 256 --encoder-layers 4 --decoder-layers 1 --heads 4 --ffn-dim 1024 \
  --init-std 0.0625 --dropout 0.1 --max-length 128 --batch-tokens 2048 --learning-rate 1e-3 --warmup-steps 500 \
  --max-steps ${MAX_STEPS:-20000} --max-hours ${MAX_HOURS:-1.5} --eval-every 1000 --eval-sentences 400 \
  --seed 0 --threads 2 "$@"
