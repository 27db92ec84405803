#!/usr/bin/env bash
# The low-latency study of docs/latency.md: train on real CIFAR-10 images, then sweep.
# Usage: docs/latency_study.sh [OUT_DIR]   (times on 2 CPU cores: see docs/latency.md)
set -euo pipefail
OUT=${1:-study}
DATA=${DATA:-../shared/data/cifar10-2k/train}
mkdir -p "$OUT"

# digits: the bundled models, all images of the val split
bsnn sweep --model bundled:digits-fp bundled:digits-binary --percentile 99.7 99.9 99.99 \
    --variant paper v0-half channel reset-zero readout-2 --time 128 --job-dir "$OUT/digits-128"
bsnn sweep --model bundled:digits-fp bundled:digits-binary --percentile 99.7 \
    --variant paper bias-cal potential-cal best --time 16 --job-dir "$OUT/digits-16"

# CIFAR-10 (20,000 real images, 10 % held out): a small FP and a binary VGG
for kind in fp binary; do
  [ -f "$OUT/cifar10-$kind.pt" ] || bsnn train --dataset imagefolder --data "$DATA" \
      --val-split 0.1 --preset "cifar10-$kind" --out "$OUT/cifar10-$kind.pt"
done
COMMON=(--dataset imagefolder --data "$DATA" --val-split 0.1 --eval_size 1000 --batch-size 100
        --norm 256 --snn-calibration-size 128)
bsnn sweep --model "$OUT/cifar10-fp.pt" "$OUT/cifar10-binary.pt" --percentile 99.7 \
    --variant paper bias-cal best --time 32 --job-dir "$OUT/cifar10-32" "${COMMON[@]}"
bsnn sweep --model "$OUT/cifar10-fp.pt" "$OUT/cifar10-binary.pt" --percentile 99.9 99.99 \
    --variant best potential-cal "best-channel:v0=half,snn_calibration=bias,threshold_granularity=channel" \
    --time 16 --job-dir "$OUT/cifar10-16" "${COMMON[@]}"
bsnn sweep --model "$OUT/cifar10-fp.pt" "$OUT/cifar10-binary.pt" --percentile 99.7 \
    --variant paper v0-half channel --time 128 --job-dir "$OUT/cifar10-128" "${COMMON[@]}"
