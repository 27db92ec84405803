#!/usr/bin/env bash
# One prepared device check (issues 15 and 25): at most 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh OUTDIR [--device cuda|cpu] [--quick]
#
# Installs the project (unless this tree's bsnn is already the one imported), runs the CUDA
# tests, compares the device with the CPU on the bundled models and a random-weight vgg15ab
# (per-step accuracy, spike counts), times the engine, the dense floor (float32 and TF32),
# SpikingJelly (when installed) and bindsnet on vgg15ab at 32x32 (batch 256 and 1024, T=256),
# with peak memory, the int8 candidate against exact float16 on the +-1 convs (issue 25), and
# the dashboard's throughput; writes results.json and results.md (and
# every step's log) to OUTDIR. `--device cpu --quick` runs the same steps small, in about a
# minute on an idle 2-core machine (tests/test_gpu_check.py runs it, so the script cannot
# rot; its limits there only catch hangs). Every step has its own
# time limit; a step that fails or runs out is recorded and the next one runs.
set -u
OUT=""; DEVICE=cuda; QUICK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=--quick; shift ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    *) OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "usage: gpu_check.sh OUTDIR [--device cuda|cpu] [--quick]" >&2; exit 2; }
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" && mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python}"
export PYTHONUNBUFFERED=1
START=$SECONDS
FAILED=0

step() {  # step NAME LIMIT_S COMMAND...: run, log to OUTDIR/NAME.log, remember a failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$rc" >"$OUT/$name.rc"
  echo "   $name: $((SECONDS - t0))s"
  [ "$rc" -eq 0 ] || { FAILED=1; echo "   $name failed (exit $rc): see $OUT/$name.log"; }
}

if [ -n "$QUICK" ]; then LIMITS=(300 300 300 300 300 300); else LIMITS=(45 75 60 200 40 60); fi

# 1. install: only where this tree's bsnn is not the one imported (no network on the device)
if ! "$PY" -c "import bsnn, sys; sys.exit(not bsnn.__file__.startswith('$ROOT/'))" 2>/dev/null
then
  step install "${LIMITS[0]}" "$PY" -m pip install --no-deps --no-build-isolation -e "$ROOT"
fi
"$PY" - "$DEVICE" >"$OUT/meta.json" <<'PYEOF'
import json, sys, datetime, torch
dev = sys.argv[1]
print(json.dumps({"device": dev, "date": datetime.date.today().isoformat(),
                  "torch": torch.__version__, "cuda": torch.version.cuda,
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  "threads": torch.get_num_threads()}))
PYEOF

# 2. the CUDA tests (they skip without a device)
step tests "${LIMITS[1]}" "$PY" -m pytest -q -p no:cacheprovider -k cuda \
  tests/test_fast_paths.py tests/test_engine.py tests/test_bindsnet.py

# 3. the device against the CPU; 4. the timings
step compare "${LIMITS[2]}" "$PY" benchmarks/gpu_check.py compare --device "$DEVICE" \
  --out "$OUT" $QUICK
step bench "${LIMITS[3]}" "$PY" benchmarks/gpu_check.py bench --device "$DEVICE" \
  --out "$OUT" $QUICK

# 5. the CUDA int8 candidate against the exact float16 path, layer by layer
step int8 "${LIMITS[4]}" "$PY" benchmarks/gpu_check.py int8 --device "$DEVICE" --out "$OUT" \
  $QUICK

# 6. the dashboard's throughput (detached is the CUDA default), against headless
if [ -n "$QUICK" ]; then SIZE=(--eval-size 16 --time 8 --batch-size 8 --repeat 1 --runs 2)
else SIZE=(--eval-size -1 --time 256 --batch-size 256 --repeat 2); fi
step dashboard "${LIMITS[5]}" "$PY" benchmarks/bench_tui.py --throughput --device "$DEVICE" \
  "${SIZE[@]}"

"$PY" benchmarks/gpu_check.py report --out "$OUT" || FAILED=1
echo "== done in $((SECONDS - START))s: $OUT/results.md"
exit $FAILED
