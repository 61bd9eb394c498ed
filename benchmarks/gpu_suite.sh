#!/usr/bin/env bash
# Every accelerator benchmark of BENCHMARKS.md in one command, on one GPU:
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR]          # default OUT_DIR: results/gpu-<UTC time>
#
# Parts (PARTS=a,b,... selects; all by default; each writes OUT_DIR/<part>.jsonl and a log):
#   r50      train_step.py: SimCLR ResNet-50 224 px bf16, batch 256 (simclr, simclr_device, and
#            the supervised ceiling at batch 512), MFU from XLA's FLOP count
#   torch50  compare_steps.py: the same SimCLR step the PyTorch way (torchvision ResNet-50,
#            channels_last, bf16 autocast, torch.compile), alternating with the JAX step
#   r18      train_step.py + compare_steps.py for ResNet-18 at 32 px, batch 1024
#   augment  device_augment.py: on-device augmentation, CIFAR and ImageNet recipes
#   ntxent   nt_xent_scaling.py: NT-Xent time and memory, global batch 256 to 16384
# then benchmarks/summarize.py writes OUT_DIR/summary.md with the tables and the targets.
# Sized for a single H100/H200: r50 + torch50 take about 6-8 minutes (mostly compilation),
# the other parts about 3-4 minutes; split them over two runs where a run has a time limit:
#   PARTS=r50,torch50 bash benchmarks/gpu_suite.sh out; PARTS=r18,augment,ntxent bash ... out
#
# Needs one Python (PYTHON, default python3) with jax (CUDA), flax, optax, orbax-checkpoint,
# ml_collections, numpy, scikit-learn, torch and torchvision; TensorFlow is not used. Where
# ml_collections is missing and .whl/ holds wheels (benchmarks/fetch_wheels.sh), they are
# installed into /tmp/cj_site first. SMOKE=1 shrinks every shape, to check the script on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-results/gpu-$(date -u +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python3}
TORCH_PY=${TORCH_PYTHON:-$PY}  # the Python with torch, if not the same one
PARTS=${PARTS:-r50,torch50,r18,augment,ntxent}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# Each JAX program compiles once: compare_steps reruns the JAX step in fresh processes.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/cj_jax_cache}

if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/cj_site .whl/*.whl
    export PYTHONPATH=/tmp/cj_site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "ml_collections is missing: pip install ml_collections, or put its wheel in .whl/" \
      "(bash benchmarks/fetch_wheels.sh)." >&2
    exit 1
  fi
fi

if [[ $SMOKE == 1 ]]; then
  R50=(--model=resnet50 --image_size=64 --batch_size=4 --dtype=float32)
  R18=(--model=resnet18 --image_size=32 --batch_size=8 --dtype=float32)
  TIMING=(--steps=1 --repeats=1 --warmup=1)
  AUG=(--batch_size=8 --batches=2 --repeats=1)
  NTX=(--batches=64,128 --devices=1 --repeats=1)
  ROUNDS=1
else
  R50=(--model=resnet50 --image_size=224 --batch_size=256 --dtype=bfloat16)
  R18=(--model=resnet18 --image_size=32 --batch_size=1024 --dtype=bfloat16)
  TIMING=(--steps=10 --repeats=3 --warmup=3)
  AUG=(--batch_size=256 --batches=20 --repeats=3)
  NTX=(--batches=256,1024,4096,8192,16384 --devices=1 --repeats=3)
  ROUNDS=2
fi

has() { [[ ",$PARTS," == *",$1,"* ]]; }
run() {  # run NAME CMD...: output to the console and OUT/NAME.log
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee -a "$OUT/$name.log"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null \
    || echo "nvidia-smi: not available"
  "$PY" - <<'EOF'
import jax, sys
print(f"python {sys.version.split()[0]}, jax {jax.__version__}, devices {jax.devices()}")
try:
  import torch, torchvision
  print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"cuda {torch.cuda.is_available()}")
except ImportError as e:
  print(f"torch: {e}")
EOF
} | tee "$OUT/environment.txt"

if has r50; then
  run r50 "$PY" benchmarks/train_step.py "${R50[@]}" "${TIMING[@]}" --peak_tflops=auto \
    --json="$OUT/r50.jsonl"
fi
if has torch50; then
  run torch50 "$PY" benchmarks/compare_steps.py --torch_python="$TORCH_PY" --jax_python="$PY" \
    "${R50[@]}" "${TIMING[@]}" --torch_compile --rounds=$ROUNDS --peak_tflops=auto \
    --json="$OUT/torch50.jsonl"
fi
if has r18; then
  run r18 "$PY" benchmarks/train_step.py "${R18[@]}" "${TIMING[@]}" --peak_tflops=auto \
    --json="$OUT/r18.jsonl"
  run r18 "$PY" benchmarks/compare_steps.py --torch_python="$TORCH_PY" --jax_python="$PY" \
    "${R18[@]}" "${TIMING[@]}" --torch_compile --rounds=1 --peak_tflops=auto \
    --json="$OUT/r18.jsonl"
fi
if has augment; then
  run augment "$PY" benchmarks/device_augment.py "${AUG[@]}" --json="$OUT/augment.jsonl"
fi
if has ntxent; then
  run ntxent "$PY" benchmarks/nt_xent_scaling.py "${NTX[@]}" --json="$OUT/ntxent.jsonl"
fi

shopt -s nullglob
results=("$OUT"/*.jsonl)
if (( ${#results[@]} )); then
  "$PY" benchmarks/summarize.py "${results[@]}" --markdown="$OUT/summary.md"
fi
echo "Results in $OUT"
