#!/usr/bin/env bash
# The study of docs/reproduction.md: the paper's VGG-15 at a CPU width on real CIFAR-10 images.
# Usage: docs/reproduction.sh [OUT_DIR] [STEP...]   steps: split train choose evaluate pool (default: all)
# Choices (percentile of `best`) are made on the val split; every reported figure is on the
# test split, which no training or choice reads. Times on 2 CPU cores: see docs/reproduction.md.
set -euo pipefail
OUT=${1:-repro}
shift || true
STEPS=${*:-split train choose evaluate pool}
SRC=${SRC:-../shared/data/cifar10-2k/train}
WIDTH=${WIDTH:-0.25}
POOL_WIDTH=${POOL_WIDTH:-0.125}
mkdir -p "$OUT"

# 2,000 images a class, sorted by name: every 20th from the first is test, from the second val.
split() {
  for cls_dir in "$SRC"/*/; do
    cls=$(basename "$cls_dir")
    mkdir -p "$OUT/data/dev/train/$cls" "$OUT/data/dev/val/$cls" "$OUT/data/test/val/$cls"
    i=0
    for f in $(ls "$cls_dir" | sort); do
      case $((i % 20)) in
        0) part=test/val ;;
        1) part=dev/val ;;
        *) part=dev/train ;;
      esac
      ln -sf "$(realpath "$cls_dir/$f")" "$OUT/data/$part/$cls/$f"
      i=$((i + 1))
    done
  done
  # thresholds are calibrated on training images in both layouts
  ln -sfn "$(realpath "$OUT/data/dev/train")" "$OUT/data/test/train"
}

DATA=(--dataset imagefolder --data "$OUT/data/dev")
TRAIN=("${DATA[@]}" --arch vgg15ab --width "$WIDTH")
train_one() {  # NAME ARGS...: train once; a finished training leaves NAME.done
  local name=$1
  shift
  [ -f "$OUT/$name.done" ] || { bsnn train "$@" --out "$OUT/$name.pt" && touch "$OUT/$name.done"; }
}
# The CPU recipes with 8 epochs; Adam at 1e-3 leaves VGG-15 (no batch norm) at chance after an
# epoch, so FP takes 3e-4, and binary the paper's 5e-4.
FP=(--preset cifar10-fp --lr 3e-4 --epochs 8)
BIN=(--preset cifar10-binary --lr 5e-4 --epochs 8)
train() {
  train_one fp "${TRAIN[@]}" "${FP[@]}"
  train_one binary-ft "${TRAIN[@]}" "${BIN[@]}" --init "$OUT/fp.pt"
  train_one binary-scratch "${TRAIN[@]}" "${BIN[@]}"
  # FP given the fine-tuned binary model's budget: 8 more epochs from fp.pt, the same recipe
  train_one fp-long "${TRAIN[@]}" "${FP[@]}" --init "$OUT/fp.pt"
}

MODELS=("$OUT/fp-long.pt" "$OUT/binary-ft.pt" "$OUT/binary-scratch.pt")
N=${N:-500}  # images of each split evaluated (the first N, classes interleaved)
SIM=(--dataset imagefolder --eval_size "$N" --batch-size 100 --norm 256 --snn-calibration-size 128)
# The val split picks the percentile that `best` uses: the highest val accuracy at T=16.
choose() {
  bsnn sweep --model "${MODELS[@]}" --percentile 99.7 99.9 --variant best --time 16 \
      --data "$OUT/data/dev" --job-dir "$OUT/val-best" "${SIM[@]}"
}
chosen_percentile() {
  python - "$1" "$OUT"/val-best/sweep-*.csv <<'PY'
import csv, sys
from pathlib import Path
rows = [r for r in csv.DictReader(open(sys.argv[2])) if Path(r["model"]).stem == sys.argv[1]]
print(max(rows, key=lambda r: float(r["acc@16"]))["percentile"])
PY
}

# The test split: the original's conversion, same-step, to T=256 (p99.7 and p99.9 for the FP and the fine-tuned
# binary model, p99.7 for the binary one from scratch), `best` at the chosen percentile to T=64.
evaluate() {
  bsnn sweep --model "$OUT/fp-long.pt" "$OUT/binary-ft.pt" --percentile 99.7 99.9 \
      --variant one-step --time 256 --data "$OUT/data/test" --job-dir "$OUT/test-paper" "${SIM[@]}"
  bsnn sweep --model "$OUT/binary-scratch.pt" --percentile 99.7 --variant one-step --time 256 \
      --data "$OUT/data/test" --job-dir "$OUT/test-paper" "${SIM[@]}"
  for model in "${MODELS[@]}"; do
    bsnn sweep --model "$model" --percentile "$(chosen_percentile "$(basename "$model" .pt)")" \
        --variant best --time 64 --data "$OUT/data/test" --job-dir "$OUT/test-best" "${SIM[@]}"
  done
}

# The pooling ablation at half the width: avg-before-ReLU, ReLU-then-avg and max-pool, the FP
# recipe, the original's conversion, same-step, on the test split to T=128.
pool() {
  for arch in vgg15ab vgg15avg vgg15max; do
    train_one "pool-$arch" "${DATA[@]}" --arch "$arch" --width "$POOL_WIDTH" "${FP[@]}"
  done
  bsnn sweep --model "$OUT"/pool-vgg15{ab,avg,max}.pt --percentile 99.7 --variant one-step \
      --time 128 --data "$OUT/data/test" --job-dir "$OUT/test-pooling" "${SIM[@]}"
}

for step in $STEPS; do
  "$step"
done
