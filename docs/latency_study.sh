#!/usr/bin/env bash
# The low-latency study of docs/latency.md: train on real CIFAR-10 images, then sweep.
# Usage: docs/latency_study.sh [OUT_DIR]   (times on 2 CPU cores: see docs/latency.md)
# CIFAR-10 uses reproduction.sh's split: the sweeps run on val (where the choices are made) and
# on test (every reported figure), which no training or choice reads.
set -euo pipefail
OUT=${1:-study}
mkdir -p "$OUT"

# digits: the bundled models, all images of the val split
bsnn sweep --model bundled:digits-fp bundled:digits-binary --percentile 99.7 99.9 99.99 \
    --variant one-step v0-half channel reset-zero readout-2 --time 128 --job-dir "$OUT/digits-128"
bsnn sweep --model bundled:digits-fp bundled:digits-binary --percentile 99.7 \
    --variant one-step bias-cal potential-cal best --time 16 --job-dir "$OUT/digits-16"

# CIFAR-10 (../shared/data/cifar10-2k: 18,000 train, 1,000 val, 1,000 test): a small FP and a
# binary VGG with the CPU presets
"$(dirname "$0")/reproduction.sh" "$OUT" split
for kind in fp binary; do
  [ -f "$OUT/cifar10-$kind.pt" ] || bsnn train --dataset imagefolder --data "$OUT/data/dev" \
      --preset "cifar10-$kind" --out "$OUT/cifar10-$kind.pt"
done
sweep() {  # SPLIT T ARGS...: the two CIFAR models on the first 1,000 images of SPLIT
  local split=$1 time=$2
  shift 2
  bsnn sweep --model "$OUT/cifar10-fp.pt" "$OUT/cifar10-binary.pt" --time "$time" \
      --job-dir "$OUT/$split-cifar10-$time" --dataset imagefolder --data "$OUT/data/$split" \
      --eval_size 1000 --batch-size 100 --norm 256 --snn-calibration-size 128 "$@"
}
BEST_CHANNEL="best-channel:v0=half,snn_calibration=bias,threshold_granularity=channel"
# val (dev): where the variants and percentiles this page recommends are chosen
sweep dev 32 --percentile 99.7 --variant one-step bias-cal best
sweep dev 16 --percentile 99.9 99.99 --variant best potential-cal "$BEST_CHANNEL"
# test: every figure the page reports
sweep test 32 --percentile 99.7 --variant one-step bias-cal best
sweep test 16 --percentile 99.9 99.99 --variant best potential-cal "$BEST_CHANNEL"
sweep test 128 --percentile 99.7 --variant one-step v0-half channel
