#!/usr/bin/env bash
# The GPU check: bf16 training tokens/s and peak memory (mixer vs Llama with SDPA flash attention, eager and
# compiled, the seed's d1024-vs-d512 comparison and matched widths, 16 layers, n_ctx 512), batched generation
# tokens/s, and short `accelerate launch train_accelerate.py` runs (bf16 on one device, FSDP2 on one process).
# About eight minutes on one NVIDIA H200; prints one table and writes gpu_check.md / gpu_check.json to $OUT
# (the device tool's output folder) or runs/gpu_check. What it measures: benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh --cpu-rehearsal   # here, without a GPU: every code path at toy sizes
#   bash benchmarks/gpu_check.sh                   # on the GPU machine; without CUDA it stops with a clear error
#
# The GPU image's own Python may hold older packages than this project needs (seen there: transformers 5.17,
# which predates the `cache` output field the mixers' generation relies on; no brotli / zstandard). Wheels in
# .whl/ (ignored by git; name it in the device tool's `carry`) are installed to /tmp/site first. Fetch them here
# with:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl transformers==5.24.0 peft==0.21.2 brotli==1.2.1 zstandard==0.25.0
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -x .venv/bin/python ] && [[ " $* " == *" --cpu-rehearsal "* ]]; then
    PYTHON=.venv/bin/python  # the rehearsal runs in the project's own environment
fi
if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null && [[ " $* " != *" --cpu-rehearsal "* ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" - <<'EOF'
import sys
import torch
import transformers
major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"cuda available: {torch.cuda.is_available()}")
if (major, minor) < (5, 24):
    sys.exit(f"gpu_check: transformers {transformers.__version__} is older than 5.24 (the mixers' generation "
             "reads the `cache` output field added there); carry the wheels named at the top of gpu_check.sh")
EOF
exec "$PYTHON" benchmarks/gpu_check.py "$@"
