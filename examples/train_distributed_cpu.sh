#!/usr/bin/env bash
# Data-parallel fairseq-train on CPU machines: NPROC ranks per machine, each its own fairseq-train process, that
# all-reduce gradients over gloo. On CPU fairseq only works with explicitly started ranks (its spawn mode
# counts CUDA devices, and under torchrun it divides the rank by the CUDA device count), so this starts them,
# and with --ddp-backend legacy_ddp (PyTorch DDP, fairseq's default, refuses CPU modules given device_ids).
#
#   examples/train_distributed_cpu.sh NPROC DATA-BIN [fairseq-train options ...]
#
# Every rank gets the same options plus --cpu and the distributed flags below; each reads its own share of
# the batches (rank r takes batches r, r+WORLD, ...), so an update sees WORLD batches of --max-tokens, the
# same samples as one process with --update-freq WORLD. Rank 0 logs and writes the checkpoints. Waits for
# every rank of this machine; if one fails, stops the others and exits with its status. PORT (or MASTER_PORT)
# picks the rendezvous port; by default a free one. OMP_NUM_THREADS defaults to the cores / NPROC.
#
# Several machines ("nodes"), torchrun's variables: run the same command on each with NNODES, its NODE_RANK
# (0 .. NNODES-1), MASTER_ADDR (node 0's address) and MASTER_PORT (a free port there); node k starts ranks
# k*NPROC .. k*NPROC+NPROC-1 of WORLD = NNODES*NPROC. DATA-BIN and --save-dir must be the same paths on every
# node (a shared file system: every rank reads checkpoint_last.pt when it resumes).
set -euo pipefail

if [[ $# -lt 2 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: [NNODES=N NODE_RANK=K MASTER_ADDR=HOST MASTER_PORT=PORT] $0 NPROC DATA-BIN [fairseq-train options ...]" >&2
  exit 2
fi
NPROC=$1
shift
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
if [[ ! $NNODES =~ ^[1-9][0-9]*$ || ! $NODE_RANK =~ ^[0-9]+$ ]] || ((NODE_RANK >= NNODES)); then
  echo "$0: need NNODES >= 1 and 0 <= NODE_RANK < NNODES (got NNODES=$NNODES NODE_RANK=$NODE_RANK)" >&2
  exit 2
fi
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-${MASTER_PORT:-}}
if [[ -z $PORT ]]; then
  if ((NNODES > 1)); then
    echo "$0: set MASTER_PORT (the same free port of node 0 on every node) when NNODES > 1" >&2
    exit 2
  fi
  PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
WORLD=$((NNODES * NPROC))
# one rank per core share: NPROC processes each using every core would oversubscribe the CPU (torchrun does the same)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}

pids=()
stop_ranks() { kill "${pids[@]}" 2>/dev/null || true; }
trap 'stop_ranks; exit 130' INT TERM

for ((local_rank = 0; local_rank < NPROC; local_rank++)); do
  fairseq-train "$@" --cpu --distributed-world-size "$WORLD" --distributed-rank $((NODE_RANK * NPROC + local_rank)) \
    --distributed-init-method "tcp://$MASTER_ADDR:$PORT" --distributed-no-spawn \
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
