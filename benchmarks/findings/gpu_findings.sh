#!/usr/bin/env bash
# The GPU findings: scaled versions of F2 (mixer vs half-width transformer autoencoder, d 512 vs 256, 128-token
# windows), F5 (oracle vs causal in normalized loss, d 512, 8 layers, n_ctx 512, a 64-value embedding) and F6
# (4 chunks of 128 vs a 512-token full-context model, d 512, 8 layers), each script's `--size gpu` preset in bf16
# on one CUDA device. Planned for about 10 minutes on one NVIDIA H200 (estimated from the step counts, not yet
# measured: no GPU was lent when it was written); each script has its own time limit so one slow finding cannot
# take the others' time. Results are marked as GPU runs (their own folder, device cuda in the settings line).
#
#   bash benchmarks/findings/gpu_findings.sh --rehearse   # here, on the CPU: every script and path at a tiny size
#   bash benchmarks/findings/gpu_findings.sh              # on the GPU machine (the device tool's `run`)
#
# Environment: SEEDS (default "0 1 2"), FINDINGS_OUT (default docs/findings/gpu, or runs/findings/gpu_rehearsal
# when rehearsing), LIMIT_S (seconds per script, default 180: three fit the device tool's 600 s per command), PYTHON (default python3; the rehearsal uses .venv).
# Under the device tool ($OUT set) the findings and the log are also packed into $OUT/gpu_findings.tar.gz (the
# tool brings back at most 8 files); unpack here with
#   mkdir -p docs/findings/gpu && tar xzf <files_at>/gpu_findings.tar.gz -C docs/findings/gpu
# The GPU image's Python may lack packages this project needs: wheels in .whl/ (see benchmarks/gpu_check.sh for
# how to fetch them; name .whl in the tool's `carry`) are installed to /tmp/site first. The built-in corpus is
# read from that machine's own Python installation, so its text (and tokenizer) can differ from this machine's;
# the settings line of each finding gives the windows and bytes per token it used.
set -euo pipefail
cd "$(dirname "$0")/../.."
REHEARSE=0
if [[ " $* " == *" --rehearse "* ]]; then
    REHEARSE=1
fi
PYTHON=${PYTHON:-python3}
if [ "$REHEARSE" = 1 ] && [ -x .venv/bin/python ]; then
    PYTHON=.venv/bin/python  # the rehearsal runs in the project's own environment
fi
if [ "$REHEARSE" = 0 ] && [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg

read -r -a SEED_LIST <<< "${SEEDS:-0 1 2}"
if [ "$REHEARSE" = 1 ]; then
    OUT_DIR=${FINDINGS_OUT:-runs/findings/gpu_rehearsal}
    FLAGS=(--size tiny --device cpu --threads 1 --seeds "${SEED_LIST[0]}")
    LIMIT=${LIMIT_S:-300}
else
    "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_findings: no CUDA device (torch.cuda.is_available() is False); rehearse on the CPU with --rehearse')"
    OUT_DIR=${FINDINGS_OUT:-docs/findings/gpu}
    FLAGS=(--size gpu --device cuda --bf16 --threads 8 --seeds "${SEED_LIST[@]}")
    LIMIT=${LIMIT_S:-180}
fi
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_findings.log"
: > "$LOG"
"$PYTHON" - <<'EOF' 2>&1 | tee -a "$LOG"
import sys
import torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {name}")
EOF

STATUS=0
for script in f2_mixer_vs_transformer_autoencoder f5_oracle_normalized_loss f6_memory_vs_full_context; do
    started=$(date +%s)
    echo "== $script ${FLAGS[*]} (limit ${LIMIT}s)" | tee -a "$LOG"
    if timeout "$LIMIT" "$PYTHON" "benchmarks/findings/$script.py" "${FLAGS[@]}" --out_dir "$OUT_DIR" >> "$LOG" 2>&1; then
        echo "== $script done in $(( $(date +%s) - started )) s" | tee -a "$LOG"
        grep -h "^\*\*Verdict" "$OUT_DIR/$script.md" | tee -a "$LOG" || true
    else
        code=$?
        STATUS=1
        echo "== $script FAILED (exit $code after $(( $(date +%s) - started )) s; 124 = over its limit); log tail:" | tee -a "$LOG"
        tail -n 20 "$LOG"
    fi
done

if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu_findings.tar.gz" -C "$OUT_DIR" .
    echo "packed $OUT/gpu_findings.tar.gz"
fi
exit $STATUS
