#!/usr/bin/env bash
# Train and test several accuracy recipes at once on one GPU machine, each through the same
# scripts a CPU run uses (bench_accuracy.py, bench_accuracy_tv.py, bench_accuracy_mask_tv.py)
# with --device cuda: the recipes are unchanged (batch size, schedule, seed), only the device
# differs, so the AP is the recipe's and the CPU cost comes from benchmarks/time_recipes.py.
#
#   benchmarks/run_gpu_accuracy.sh OUT_DIR JOB [JOB ...]
#
# JOB is NAME=COMMAND (a bench script and its options, without --device/--results, which this
# script adds), e.g. 'plain=bench_accuracy.py --config configs/retinanet/retinanet_r18_fpn_12e_bccd320.py'.
# Every job runs in the background with OMP_NUM_THREADS=1; each job's output goes to
# OUT_DIR/logs/NAME.log, its exit status to OUT_DIR/logs/status.txt and its accuracy row to
# OUT_DIR/accuracy_gpu.md (the rows of benchmarks/accuracy.md's table). JOB_TIMEOUT (seconds,
# default 540) stops a job that runs too long; DEVICE=cpu makes a smoke run possible without a GPU.
set -u
out="$1"; shift
mkdir -p "$out/logs"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
for job in "$@"; do
    name="${job%%=*}"; cmd="${job#*=}"
    script="${cmd%% *}"; args="${cmd#"$script"}"
    extra=(--device "${DEVICE:-cuda}" --results "$out/accuracy_gpu.md")
    [[ "$script" == bench_accuracy.py ]] && extra+=(--work-dir "/tmp/gpu_acc/$name")
    # shellcheck disable=SC2086  # the job's options are words on purpose
    ( timeout "${JOB_TIMEOUT:-540}" python "$here/$script" $args "${extra[@]}" \
          >"$out/logs/$name.log" 2>&1
      echo "$name exit $? at $(date -u +%H:%M:%S)" >>"$out/logs/status.txt" ) &
done
wait
cat "$out/logs/status.txt"
