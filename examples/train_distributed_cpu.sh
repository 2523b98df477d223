#!/usr/bin/env bash
# Data-parallel fairseq-train on one CPU machine: NPROC ranks, each its own fairseq-train process, that
# all-reduce gradients over gloo. On CPU fairseq only works with explicitly started ranks (its spawn mode
# counts CUDA devices, and under torchrun it divides the rank by the CUDA device count), so this starts them,
# and with --ddp-backend legacy_ddp (PyTorch DDP, fairseq's default, refuses CPU modules given device_ids).
#
#   examples/train_distributed_cpu.sh NPROC DATA-BIN [fairseq-train options ...]
#
# Every rank gets the same options plus --cpu and the distributed flags below; each reads its own share of
# the batches (rank r takes batches r, r+NPROC, ...), so an update sees NPROC batches of --max-tokens, the
# same samples as one process with --update-freq NPROC. Rank 0 logs and writes the checkpoints. Waits for
# every rank; if one fails, stops the others and exits with its status. PORT (environment) picks the
# rendezvous port; by default a free one. OMP_NUM_THREADS defaults to the cores / NPROC.
set -euo pipefail

if [[ $# -lt 2 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NPROC DATA-BIN [fairseq-train options ...]" >&2
  exit 2
fi
NPROC=$1
shift
# one rank per core share: NPROC processes each using every core would oversubscribe the CPU (torchrun does the same)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}
PORT=${PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

pids=()
stop_ranks() { kill "${pids[@]}" 2>/dev/null || true; }
trap 'stop_ranks; exit 130' INT TERM

for ((rank = 0; rank < NPROC; rank++)); do
  fairseq-train "$@" --cpu --distributed-world-size "$NPROC" --distributed-rank "$rank" \
    --distributed-init-method "tcp://127.0.0.1:$PORT" --distributed-no-spawn \
    --distributed-backend gloo --ddp-backend legacy_ddp &
  pids+=($!)
done

for _ in "${pids[@]}"; do
  status=0
  wait -n || status=$?
  if ((status != 0)); then
    echo "$0: a rank exited with status $status; stopping the others" >&2
    stop_ranks
    wait || true
    exit "$status"
  fi
done
