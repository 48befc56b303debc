#!/usr/bin/env bash
# Distributed training on one machine: tools/dist_train.sh CONFIG GPUS [detforge train args]
# Several machines: NNODES=2 NODE_RANK=0 MASTER_ADDR=host tools/dist_train.sh CONFIG 8 ...
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
torchrun \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    -m detforge train \
    $CONFIG \
    --launcher pytorch ${@:3}
