#!/usr/bin/env bash
# Distributed testing with torchrun: every rank runs inference on its share of the test
# set, rank 0 gathers the results in dataset order and evaluates.
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC [detforge test args, e.g. --eval bbox --out r.pkl]
# Several machines: NNODES, NODE_RANK, MASTER_ADDR, PORT as for tools/dist_train.sh.
# See docs/distributed.md.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NPROC [detforge test args...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
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
    -m detforge test \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
