#!/usr/bin/env bash
# Table 1 of the paper at small scale, on the shipped real sample: cluster-level held-out split and
# UR100 / UR50/S / UR50/D / 10%-of-UR50/S training sets (MMseqs2), then the language models of
# Table 1 trained on them and scored on the same held-out clusters:
#   unigram, best n-gram (tuned on valid), untrained Transformer, BiLSTM (ELMo style),
#   ESM-1b small and larger on UR50/S, ESM-1b small on UR100, UR50/D and 10% of UR50/S, and an ESM-2 of the
#   small ESM-1b's shape on UR50/S (the two generations on the same held-out clusters).
# Every neural model gets the same updates, token budget, crop length and learning-rate schedule.
# Runs on a GPU when torch sees one.
# Knobs (environment): OUT, INPUT, MAX_UPDATE, MAX_TOKENS, MAX_POSITIONS, SMALL, LARGE, LSTM, ESM2, SEED, WORKERS.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/table1}
INPUT=${INPUT:-examples/data/uniprot_sample.fasta.gz}
MAX_UPDATE=${MAX_UPDATE:-300}
MAX_TOKENS=${MAX_TOKENS:-8192}
MAX_POSITIONS=${MAX_POSITIONS:-512}
SMALL=${SMALL:-esm1b_t4_1M}
LARGE=${LARGE:-esm1b_t6_3M}
LSTM=${LSTM:-bilstm_t2_1M}
ESM2=${ESM2:-esm2_t4_1M}
SEED=${SEED:-1}
WORKERS=${WORKERS:-2}
SPLITS="$OUT/splits"
# fairseq-train uses a GPU when there is one; --cpu only where there is none
CPU_FLAG=$(python -c "import torch; print('' if torch.cuda.is_available() else '--cpu')")

rm -rf "$OUT" && mkdir -p "$OUT"
echo "== 1/4 cluster $INPUT with MMseqs2; hold out 10% of the 50% clusters; build UR100, UR50/S, UR50/D"
fairseq-esm-make-uniref-splits "$INPUT" --out "$SPLITS" --fractions 0.1 --seed "$SEED" \
  --threads "$WORKERS"

echo "== 2/4 n-gram models: contexts 0-8, Laplace alpha tuned on the validation clusters"
fairseq-esm-ngram --train "$SPLITS/ur50s/train.fasta" --valid "$SPLITS/valid.fasta" \
  --heldout "$SPLITS/heldout.fasta" --json "$OUT/ngram.json" --markdown "$OUT/ngram.md"

# train NAME DATASET ARCH CRITERION [extra fairseq-train options...]
train() {
  local name=$1 dataset=$2 arch=$3 criterion=$4
  shift 4
  echo "== 3/4 train $name: $arch on $dataset, $MAX_UPDATE updates (fairseq-train)"
  fairseq-train "$SPLITS/$dataset/data-bin" --user-dir fairseq_esm --task protein_mlm \
    --criterion "$criterion" --arch "$arch" --max-positions "$MAX_POSITIONS" --max-tokens "$MAX_TOKENS" \
    --seed "$SEED" $CPU_FLAG --num-workers 0 --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-8 \
    --weight-decay 0.01 --clip-norm 1.0 --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 60 \
    --max-update "$MAX_UPDATE" --valid-subset valid --validate-interval-updates 100 \
    --save-interval-updates 100 --keep-interval-updates 1 --no-epoch-checkpoints \
    --save-dir "$OUT/checkpoints/$name" --log-format simple --log-interval 50 "$@"
}
train esm_small_ur50s ur50s "$SMALL" esm_masked_lm
train esm_large_ur50s ur50s "$LARGE" esm_masked_lm
train lstm_ur50s ur50s "$LSTM" bidirectional_lm
train esm_small_ur100 ur100 "$SMALL" esm_masked_lm
train esm_small_ur50d ur50d "$SMALL" esm_masked_lm --cluster-sampling
train esm_small_ur50s_10pct ur50s_10pct "$SMALL" esm_masked_lm
train esm2_small_ur50s ur50s "$ESM2" esm_masked_lm

echo "== 4/4 score every model on the held-out clusters (same masks for every masked model)"
ckpt() { echo "$OUT/checkpoints/$1/checkpoint_best.pt"; }
fairseq-esm-lm-table "$SPLITS/ur50s/data-bin" --subset heldout --seed "$SEED" --max-positions "$MAX_POSITIONS" \
  --unigram --ngram-json "$OUT/ngram.json" \
  --untrained "untrained Transformer $SMALL=$SMALL" \
  --model "BiLSTM $LSTM, UR50/S=$(ckpt lstm_ur50s)" \
  --model "Transformer $SMALL, UR50/S=$(ckpt esm_small_ur50s)" \
  --model "Transformer $LARGE, UR50/S=$(ckpt esm_large_ur50s)" \
  --model "Transformer $SMALL, UR100=$(ckpt esm_small_ur100)" \
  --model "Transformer $SMALL, UR50/D=$(ckpt esm_small_ur50d)" \
  --model "Transformer $SMALL, 10% of UR50/S=$(ckpt esm_small_ur50s_10pct)" \
  --model "ESM-2 Transformer $ESM2, UR50/S=$(ckpt esm2_small_ur50s)" \
  --paper "n-gram=17.18 (context 4)" --paper "BiLSTM $LSTM, UR50/S=14.4 (small LSTM, 28.4M)" \
  --paper "Transformer $SMALL, UR50/S=11.79 (6 layers, 42.6M)" \
  --paper "Transformer $LARGE, UR50/S=10.45 (12 layers, 85.1M)" \
  --paper "Transformer $SMALL, UR50/D=8.46 (34 layers, UR50/D)" \
  --json "$OUT/table1.json" --markdown "$OUT/table1.md"
