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
  --vocab-size 8000 --d-model 256 --encoder-layers 6 --decoder-layers 2 --heads 4 --ffn-dim 1024 \
  --dropout 0.1 --max-length 128 --batch-tokens 4096 --learning-rate 7e-4 --warmup-steps 600 \
  --max-steps ${MAX_STEPS:-8000} --max-hours ${MAX_HOURS:-1.5} --eval-every 500 --eval-sentences 400 \
  --seed 0 --threads 2 "$@"
