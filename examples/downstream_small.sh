#!/usr/bin/env bash
# Issue 7 at small scale: every structure table of README "What the representations know", from one checkpoint.
#
#   make downstream                       # the 0.9M model `make table1` trains
#   bash examples/downstream_small.sh CHECKPOINT [OUT_DIR]
#
# Steps (each prints its own report; tables land in OUT_DIR/*.md and *.json):
#   1. DSSP labels for every protein chain of ../shared/data/structures (two processes) and for the TS50 backbone set
#   2. linear probes (Table 3): fairseq-esm-probes, family / superfamily / fold 5-fold CV, trained vs untrained
#   3. structure-heads data (train/valid from the labels, test = CB513), MSA "avg" features (MMseqs2 against
#      the UniProt sample + Swiss-Prot slice + ASTRAL), then fairseq-train / fairseq-validate of the SS8 head
#      (direct, direct + avg, untrained) and the contact ResNet (trained, untrained, + MSA cov with K = 8)
#   4. HOMOLOGY=1: remote homology with the HMMER baselines (16 min more on 2 cores)
# Needs mkdssp, mmseqs (make env) and ../shared/data (SHARED_DATA=... to point elsewhere).
set -euo pipefail

CK=${1:-runs/table1/checkpoints/esm_small_ur50s/checkpoint_best.pt}
OUT=${2:-runs/downstream}
SHARED=${SHARED_DATA:-../shared/data}
LABEL="ESM-1b 0.9M, 300 updates"
[ -f "$CK" ] || { echo "error: $CK not found: run make table1 first, or pass a checkpoint" >&2; exit 2; }
[ -d "$SHARED/structures" ] || { echo "error: $SHARED/structures not found: set SHARED_DATA" >&2; exit 2; }
mkdir -p "$OUT"
stamp() { echo "== $(date +%T) $*"; }

stamp "1. labels"
fairseq-esm-backbone-json-to-pdb "$SHARED/structures/gvp_ts50.json" --out "$OUT/ts50_pdb"
sed "s#^\.\./shared/data#$SHARED#" examples/data/probes/structure_chains.txt > "$OUT/chains.txt"
half=$(( ($(wc -l < "$OUT/chains.txt") + 1) / 2 ))
fairseq-esm-structure-labels $(head -n "$half" "$OUT/chains.txt") --out "$OUT/labels_a" \
    > "$OUT/labels_a.log" 2>&1 &
fairseq-esm-structure-labels $(tail -n +"$((half + 1))" "$OUT/chains.txt") --out "$OUT/labels_b" \
    > "$OUT/labels_b.log" 2>&1
wait
fairseq-esm-structure-labels "$OUT"/ts50_pdb/*.pdb --out "$OUT/labels_ts50" > "$OUT/labels_ts50.log" 2>&1
tail -n 1 "$OUT"/labels_a.log "$OUT"/labels_b.log "$OUT"/labels_ts50.log
LABELS=("$OUT/labels_a" "$OUT/labels_b" "$OUT/labels_ts50")

stamp "2. linear probes"
fairseq-esm-probes "$CK" "${LABELS[@]/#/--labels=}" --levels family superfamily fold --folds 5 --seed 1 \
    --untrained --onehot --label "$LABEL" --no-progress --json "$OUT/probes.json" --markdown "$OUT/probes.md" \
    --png-dir "$OUT/probes_png" --save-assignments "$OUT/probes_assignments.tsv"

stamp "3. supervised heads"
fairseq-esm-structure-dataset "${LABELS[@]}" --cb513 "$SHARED/ss_cb513/CB513_HHblits.csv" \
    --out "$OUT/data-ss"
{ zcat "$SHARED/pretrain_uniprot/mmseqs2_examples_DB.fasta.gz" "$SHARED/pretrain_uniprot/opal_uniprot_sprot12071.fasta.gz"
  zcat -f "$SHARED/scope_astral40_2.07/astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa"; } > "$OUT/msa_db.fasta"
fairseq-esm-msa-split-features "$OUT/data-ss" "$CK" --db "$OUT/msa_db.fasta" --threads 2 --cov-k 8 --no-progress
DIM=$(python -c "import numpy, sys; print(numpy.load(sys.argv[1], mmap_mode='r').shape[1])" "$OUT/data-ss/test.features.npy")

heads() {  # name task arch criterion max-tokens epochs valid-subset [extra fairseq-train flags]
    local name=$1 task=$2 arch=$3 criterion=$4 tokens=$5 epochs=$6 subset=$7
    shift 7
    rm -rf "$OUT/$name"
    fairseq-train "$OUT/data-ss" --user-dir fairseq_esm --task "$task" --arch "$arch" --criterion "$criterion" \
        --pretrained-checkpoint "$CK" --optimizer adam --lr 1e-3 --max-tokens "$tokens" --max-epoch "$epochs" \
        --num-workers 0 --seed 1 --save-dir "$OUT/$name" --no-epoch-checkpoints --log-format simple "$@" \
        > "$OUT/$name.train.log" 2>&1
    fairseq-validate "$OUT/data-ss" --user-dir fairseq_esm --task "$task" --path "$OUT/$name/checkpoint_best.pt" \
        --valid-subset "$subset" --max-tokens 8192 --num-workers 0 2>&1 \
        | grep "valid on '$subset'" | sed "s/^/$name: /" | tee -a "$OUT/heads.txt"
}
: > "$OUT/heads.txt"
heads ss8_direct protein_ss8 netsurf_ss8 protein_ss8 8192 8 test
heads ss8_untrained protein_ss8 netsurf_ss8 protein_ss8 8192 8 test --untrained-backbone
heads ss8_direct_avg protein_ss8 netsurf_ss8 protein_ss8 8192 8 test --feature-dim "$DIM"
heads contacts_direct protein_contacts contact_resnet protein_contacts 2048 4 valid
heads contacts_untrained protein_contacts contact_resnet protein_contacts 2048 4 valid --untrained-backbone
heads contacts_direct_cov8 protein_contacts contact_resnet protein_contacts 2048 4 valid --pair-feature-k 8

if [ "${HOMOLOGY:-0}" = 1 ]; then
    stamp "4. remote homology with HMMER baselines"
    fairseq-esm-homology "$CK" --max-domains 4000 --seed 1 --untrained --composition --hmm phmmer --hmm jackhmmer \
        --label "$LABEL" --no-progress --json "$OUT/homology.json" --markdown "$OUT/homology.md"
fi
stamp "done: tables in $OUT (probes.md, heads.txt, homology.md with HOMOLOGY=1)"
