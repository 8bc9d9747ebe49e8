"""The long-context benchmark and the GPU check work before anyone spends minutes (or device time) on them: the GPU
check refuses to run without CUDA unless asked to rehearse, its rehearsal runs every code path (slow), the
long-context script runs end to end at toy sizes (slow) and states crossover points correctly. No timing is
asserted: speed is the benchmarks' business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_long_context import crossovers  # noqa: E402


def run(command: list[str], tmp_path: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), OUT="")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_without_cuda_fails_clearly(tmp_path):
    done = run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)], tmp_path)
    assert done.returncode != 0
    assert "no CUDA device" in done.stderr and "--cpu-rehearsal" in done.stderr
    assert not (tmp_path / "gpu_check.md").exists()


def test_crossovers_name_the_lengths_between_which_the_order_changes():
    results = {
        "train_tokens_per_s": {256: {"mixer": 30, "llama": 10, "memory": 20},
                               512: {"mixer": 20, "llama": 19, "memory": 21},  # within 10 %: level
                               1024: {"mixer": 8, "llama": 9, "memory": 21},  # 12.5 %: Llama better
                               2048: {"mixer": 4, "llama": 8, "memory": 21}},
        "decode_ms_per_token": {length: {"mixer": 1, "llama": 2, "memory": 3} for length in (256, 512, 1024, 2048)},
        "train_peak_mb": {},
    }
    lines = crossovers(results, [256, 512, 1024, 2048])
    assert lines[0] == (
        "- training tokens/s (bf16), causal mixer vs Llama (KV cache): causal mixer better at 256; level (within "
        "10 %) at 512; Llama (KV cache) better at 1024-2048 -> crossover between 256 and 1024 tokens (Llama (KV "
        "cache) better from 1024).")
    assert any(line.startswith("- decode ms/token near the end of the context, causal mixer vs Llama (KV cache): "
                               "causal mixer better at 256-2048 -> no crossover") for line in lines)
    assert not any("peak memory" in line for line in lines)  # no numbers, no claims


def test_autoencoder_encoder_benchmark_times_both_paths_of_a_preset(tmp_path):
    output = tmp_path / "encoder.md"
    done = run([sys.executable, "benchmarks/bench_autoencoder_encoder.py", "--presets", "autoencoder_tiny",
                "--rounds", "1", "--output", str(output)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in output.read_text().splitlines() if line.startswith("| autoencoder_tiny |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:7] == ["32", "128", "512", "64", "2 + 2", "32"]  # read from configuration/autoencoder_tiny.json
    assert float(cells[7]) > 0 and float(cells[8]) > 0 and cells[9].startswith("**")
    refused = run([sys.executable, "benchmarks/bench_autoencoder_encoder.py", "--presets", "mixer_tiny",
                   "--output", str(tmp_path / "no.md")], tmp_path)
    assert refused.returncode != 0 and "is a 'mixer' preset, not an autoencoder" in refused.stderr


@pytest.mark.slow
def test_long_context_runs_end_to_end_at_toy_sizes(tmp_path):
    output = tmp_path / "long.md"
    done = run([sys.executable, "benchmarks/bench_long_context.py", "--lengths", "32", "64", "--chunk", "32",
                "--hidden", "64", "--layers", "1", "--vocab", "100", "--train_tokens", "64", "--new_tokens", "4",
                "--rounds", "1", "--repeats", "1", "--output", str(output)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text()
    assert "## Crossover points" in text and "| 64 |" in text
    for measure in ("train_tokens_per_s", "train_peak_mb", "decode_ms_per_token"):
        assert (tmp_path / f"long_context_{measure}.png").stat().st_size > 1000


@pytest.mark.slow
def test_gpu_check_cpu_rehearsal_runs_every_section(tmp_path):
    done = run(["bash", "benchmarks/gpu_check.sh", "--cpu-rehearsal", "--out", str(tmp_path), "--work",
                str(tmp_path / "work")], tmp_path, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {r["mode"] for r in result["training"]} == {"eager", "eager, full logits", "compiled"}
    assert len(result["generation"]) == 2
    assert [r["returncode"] for r in result["accelerate"]] == [0, 0]
    assert "CPU rehearsal" in (tmp_path / "gpu_check.md").read_text()
