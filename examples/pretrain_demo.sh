#!/usr/bin/env bash
# The main job on the shipped real sample: hold out proteins, binarize, pretrain a small ESM-1b
# with fairseq-train, validate with fairseq-validate, and set its held-out ECE next to the
# amino-acid-frequency (unigram) baseline's on the same masked positions.
# Knobs (environment): OUT, ARCH, MAX_UPDATE, MAX_POSITIONS, MAX_TOKENS, LR, SEED, WORKERS.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/demo}
ARCH=${ARCH:-esm1b_t4_1M}
MAX_UPDATE=${MAX_UPDATE:-300}
MAX_POSITIONS=${MAX_POSITIONS:-512}
MAX_TOKENS=${MAX_TOKENS:-8192}
LR=${LR:-2e-3}
SEED=${SEED:-1}
WORKERS=${WORKERS:-2}
SAMPLE=examples/data/uniprot_sample.fasta.gz

rm -rf "$OUT" && mkdir -p "$OUT"
echo "== 1/5 hold out 500 proteins from $SAMPLE"
fairseq-esm-split-fasta "$SAMPLE" --out "$OUT/fasta" --valid-count 500 --seed "$SEED"

echo "== 2/5 binarize (fast path; byte-identical to fairseq-preprocess)"
fairseq-esm-binarize --trainpref "$OUT/fasta/train.fasta" \
  --validpref "$OUT/fasta/valid.fasta" --destdir "$OUT/data-bin" --workers "$WORKERS"

TASK_ARGS=(--user-dir fairseq_esm --task protein_mlm --criterion esm_masked_lm
  --max-positions "$MAX_POSITIONS" --max-tokens "$MAX_TOKENS" --seed "$SEED" --cpu --num-workers 0)

echo "== 3/5 pretrain $ARCH for $MAX_UPDATE updates (fairseq-train)"
fairseq-train "$OUT/data-bin" "${TASK_ARGS[@]}" --arch "$ARCH" \
  --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-8 --weight-decay 0.01 --clip-norm 1.0 \
  --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates 60 \
  --max-update "$MAX_UPDATE" --validate-interval-updates 100 --save-interval-updates 100 \
  --keep-interval-updates 1 --no-epoch-checkpoints --save-dir "$OUT/checkpoints" \
  --log-format simple --log-interval 25

echo "== 4/5 validate checkpoint_best.pt on the held-out proteins (fairseq-validate)"
fairseq-validate "$OUT/data-bin" "${TASK_ARGS[@]}" --path "$OUT/checkpoints/checkpoint_best.pt" \
  --valid-subset valid --log-format json | tee "$OUT/validate.log"

echo "== 5/5 unigram (amino-acid frequency) baseline on the same masked positions"
fairseq-esm-unigram-ece "$OUT/data-bin" --train-split train --valid-split valid \
  --max-positions "$MAX_POSITIONS" --seed "$SEED" --json "$OUT/unigram.json"

python examples/summarize_demo.py --validate-log "$OUT/validate.log" \
  --unigram-json "$OUT/unigram.json" --arch "$ARCH" --out "$OUT/results.json"
