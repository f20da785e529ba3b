#!/usr/bin/env bash
# The GPU path in one call: the CUDA-marked tests, a short training of each reference model on generated
# 224 px photos, and `python -m bench --accelerator cuda --quick`; logs and JSON under one folder.
# Without a GPU it says so, runs the CPU half (the same trainings and evaluations at 32 px through
# --data-pipeline tensor; CPU speeds are the bench's job) and exits 0 when that passes.
# Installs nothing: it uses .venv (from `make install`) or $PYTHON (e.g. PYTHON=python3 on a machine whose
# Python already has torch, lightning, timm, torchmetrics and onnxruntime). Exit status: failed steps.
#
#   scripts/gpu-check.sh [OUT_DIR]        (default: gpu-check/; on the device machine: $OUT)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WORK=$(mktemp -d -t imgcls-gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# src/ first: the check also runs where imgcls is not installed (a GPU machine's own Python with torch).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export IMGCLS_CACHE="$WORK/cache" IMGCLS_OFFLINE=1 PYTHONUNBUFFERED=1
failures=0
T0=$(date +%s)

step() { # step NAME COMMAND...: output to $OUT_DIR/NAME.log, one status line here
  local name=$1 start
  shift
  start=$(date +%s)
  if "$@" >"$OUT_DIR/$name.log" 2>&1; then
    echo "  ok      $name ($(($(date +%s) - start)) s)"
  else
    echo "  FAILED  $name ($(($(date +%s) - start)) s): last lines of $OUT_DIR/$name.log"
    tail -n 15 "$OUT_DIR/$name.log" | sed 's/^/          /'
    failures=$((failures + 1))
  fi
}

gpu=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')" 2>"$OUT_DIR/python.log") || {
  echo "gpu-check: $PYTHON cannot import torch (run make install first); see $OUT_DIR/python.log"
  exit 1
}

if [ -z "$gpu" ]; then
  echo "gpu-check: no CUDA GPU visible to PyTorch; running the CPU half only (GPU numbers still to be taken)"
  SIZE=32 EPOCHS=1 PER_CLASS=6 EXTRA=(--data-pipeline tensor)
  export IMGCLS_ENGINE=torch # evaluate in PyTorch: no ONNX export of ViT-B/16's 86M parameters on 2 cores
  # (the CUDA tests would only skip here: make test collects them anyway)
else
  echo "gpu-check: $gpu"
  nvidia-smi >"$OUT_DIR/nvidia-smi.txt" 2>&1 || true
  SIZE=224 EPOCHS=2 PER_CLASS=40 EXTRA=()
  step cuda-tests "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/
fi

step demo-data "$PYTHON" -m imgcls demo-data "$WORK/data" --per-class "$PER_CLASS" --size "$SIZE" --seed 1
# GPU_CHECK_MODELS narrows the trainings (the test suite runs the CPU half with two of them).
for model in ${GPU_CHECK_MODELS:-efficientnet_b0 vit_b_16 attn_cnn}; do
  step "train-$model" "$PYTHON" -m imgcls train --model "$model" --data "$WORK/data" --image-size "$SIZE" \
    --epochs "$EPOCHS" --no-pretrained --finetune full --out "$WORK/runs/$model" --no-progress "${EXTRA[@]}"
  step "evaluate-$model" "$PYTHON" -m imgcls evaluate "$WORK/runs/$model"
  cp "$WORK/runs/$model/metrics.csv" "$OUT_DIR/metrics-$model.csv" 2>/dev/null || true
done

if [ -n "$gpu" ]; then
  step bench-cuda "$PYTHON" -m bench --accelerator cuda --quick --json "$OUT_DIR/bench-cuda.json"
fi
[ -f "$OUT_DIR/bench-cuda.json" ] && sed -n '/^measure/,$p' "$OUT_DIR/bench-cuda.log"
echo "gpu-check: $failures failed step(s) in $(($(date +%s) - T0)) s; logs in $OUT_DIR"
exit "$failures"
