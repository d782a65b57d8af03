#!/usr/bin/env bash
# GPU check for the sequential recommenders: the speed table of benchmarks/sequential.py on
# MovieLens-1M-shaped synthetic data, with device cuda and bf16 autocast, then printed.
#
#   bash benchmarks/gpu_check.sh           # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --cpu     # the same steps on the CPU (a dry run, 2 timed batches)
#
# It installs nothing heavy: it uses the Python that already has torch (PYTHON, else .venv/bin/python,
# else python3) and puts this checkout on PYTHONPATH. If numpy/pandas/scipy/tqdm are missing it
# installs only those (small wheels); it never installs torch.
# The table goes to benchmarks/results/sequential_gpu.md (with --cpu: $TMPDIR/sequential_cpu_dryrun.md) and to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=cuda
if [[ "${1:-}" == "--cpu" ]]; then MODE=cpu; fi

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "error: $PY has no torch; this check does not install it. Set PYTHON to an interpreter with torch." >&2
  exit 2
fi
if ! "$PY" -c "import numpy, pandas, scipy, tqdm" 2>/dev/null; then
  echo "installing the small dependencies (numpy pandas scipy tqdm) ..."
  "$PY" -m pip install -q numpy pandas scipy tqdm
fi

"$PY" - <<'EOF'
import torch, platform
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, bf16 supported: {torch.cuda.is_bf16_supported()}")
EOF

if [[ "$MODE" == cuda ]]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA GPU visible; run with --cpu for a dry run on the CPU" >&2
    exit 3
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true
  OUT=benchmarks/results/sequential_gpu.md
  "$PY" benchmarks/sequential.py --table speed --device cuda --amp --speed-batches 20 --out "$OUT"
else
  OUT=${TMPDIR:-/tmp}/sequential_cpu_dryrun.md   # a dry run: not a result worth keeping
  "$PY" benchmarks/sequential.py --table speed --device cpu --amp --speed-batches 2 --out "$OUT"
fi
echo
echo "=== $OUT ==="
cat "$OUT"
