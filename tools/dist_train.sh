#!/usr/bin/env bash
# Distributed training with torchrun (one process per GPU, or per CPU slot with gloo).
#   One machine:    tools/dist_train.sh CONFIG NPROC [detforge train args...]
#   Several:        NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 PORT=29500 tools/dist_train.sh CONFIG 8 ...
#                   (the same command on every machine, NODE_RANK=0..NNODES-1)
# Equivalent to: torchrun --nproc_per_node NPROC -m detforge train CONFIG --launcher pytorch ...
# See docs/distributed.md.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NPROC [detforge train args...]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
exec python -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    -m detforge train \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
