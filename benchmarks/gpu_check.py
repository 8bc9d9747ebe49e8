"""The GPU check (run through ``benchmarks/gpu_check.sh``): on one CUDA GPU, in about eight minutes, measure

1. bf16 training tokens/s and peak GPU memory of the masked mixer against ``LlamaForCausalLM`` with SDPA flash
   attention, eager and compiled (``torch.compile(fullgraph=True)`` of the loss function, as ``train.compile``),
   at the seed's comparison (mixer d 1024 vs Llama d 512, 16 layers, n_ctx 512) and at matched widths (d 512 and
   d 1024 both), with the training loop's defaults (fused AdamW, loss without full-vocabulary logits) and, eager,
   the full-logits loss as a lever check; MFU against this GPU's measured bf16 matmul rate;
2. batched greedy generation tokens/s (batch 1 / 8 / 32 / 64): the cached mixer against Llama with its dynamic
   and static KV caches, bf16 weights;
3. two short ``accelerate launch`` runs of ``train_accelerate.py`` on the GPU: bf16 on one device, and FSDP2 on one
   process (``configuration/accelerate/multi_gpu_fsdp.yaml`` with ``--num_processes 1``);

then print one table and write it (``gpu_check.md``) with the raw numbers (``gpu_check.json``) to ``--out``.

Without CUDA it stops at once with a clear error. ``--cpu-rehearsal`` runs every code path on the CPU at toy
sizes (compiling with the ``aot_eager`` backend, peak memory as resident memory), so the script is known to work
before device time is spent on it::

    bash benchmarks/gpu_check.sh --cpu-rehearsal          # a few minutes on 2 CPU cores
    bash benchmarks/gpu_check.sh                          # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_batched_generation import PeakSampler  # noqa: E402
from bench_training import (  # noqa: E402
    BUILDERS,
    Setting,
    count_flops,
    loss_function,
)

from memmix_train.loop import optimizer_impl_flags  # noqa: E402

H200_DENSE_BF16 = 989e12  # NVIDIA's dense bf16 tensor-core figure for the H100/H200 SXM


@dataclass
class Sizes:
    """Everything that differs between the GPU run and the CPU rehearsal."""

    depth: int
    n_ctx: int
    batch: int
    pairs: tuple[tuple[str, int, str, int], ...]  # (label, mixer width, llama width) comparisons
    warmup: int
    timed: int
    gen_width: int
    gen_depth: int
    gen_batches: tuple[int, ...]
    gen_prompt: int
    gen_new: int
    matmul: int
    train_preset: str
    train_steps: int
    compile_backend: str


GPU = Sizes(depth=16, n_ctx=512, batch=32,
            pairs=(("seed: mixer d1024 vs Llama d512", 1024, "llama", 512),
                   ("matched d512", 512, "llama", 512), ("matched d1024", 1024, "llama", 1024)),
            warmup=3, timed=10, gen_width=512, gen_depth=16, gen_batches=(1, 8, 32, 64), gen_prompt=64, gen_new=64,
            matmul=8192, train_preset="configuration/mixer_small.json", train_steps=150, compile_backend="inductor")
REHEARSAL = Sizes(depth=2, n_ctx=64, batch=2,
                  pairs=(("seed: mixer d128 vs Llama d64", 128, "llama", 64), ("matched d64", 64, "llama", 64)),
                  warmup=1, timed=2, gen_width=64, gen_depth=2, gen_batches=(1, 4), gen_prompt=8, gen_new=6,
                  matmul=512, train_preset="configuration/mixer_tiny.json", train_steps=4,
                  compile_backend="aot_eager")


@dataclass
class TrainResult:
    model: str
    width: int
    mode: str  # eager / compiled / eager, full logits
    tokens_per_s: float
    peak_gb: float
    mfu: float
    compile_s: float | None = None
    note: str = ""


# ----- device helpers ---------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> PeakSampler | None:
    """Start a peak-memory measurement: CUDA's allocator statistics, or (rehearsal) the process's RSS."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return None
    sampler = PeakSampler()
    sampler.__enter__()
    return sampler


def read_peak_gb(device: torch.device, sampler: PeakSampler | None) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    sampler.__exit__(None, None, None)
    return sampler.peak / 1024  # whole-process RSS on CPU, not comparable to GPU numbers


def matmul_rate(device: torch.device, size: int) -> float:
    """bf16 FLOP/s of a square matmul (mean of 10 after 3 warm-ups)."""
    left = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    right = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        left @ right
    synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        left @ right
    synchronize(device)
    return 10 * 2 * size**3 / (time.perf_counter() - start)


def flash_attention(device: torch.device):
    """SDPA restricted to the flash kernel (raises if it cannot run), so Llama's numbers are flash numbers."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])


# ----- 1. training ------------------------------------------------------------------------------------------


def time_training(name: str, width: int, mode: str, sizes: Sizes, device: torch.device,
                  peak_rate: float) -> TrainResult:
    """Build one model on ``device``, train ``warmup`` + ``timed`` steps in bf16 autocast, report the timed ones."""
    setting = Setting(width, sizes.depth, sizes.n_ctx, sizes.batch)
    torch.manual_seed(0)
    model = BUILDERS[name](setting).to(device).train()
    batch = torch.randint(0, model.config.vocab_size, (sizes.batch, sizes.n_ctx), device=device)
    flops = count_flops(model, batch)  # an fp32 pass: measured before the peak-memory window opens
    sampler = reset_peak(device)  # the peak counts from here: weights, then gradients, optimizer state, activations
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **optimizer_impl_flags("fused"))
    compute_loss = loss_function(name, model, chunked=mode != "eager, full logits")
    note = ""
    if mode == "compiled":
        compute_loss = torch.compile(compute_loss, fullgraph=True, backend=sizes.compile_backend)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16), flash_attention(device):
            loss = compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    try:
        step()
    except Exception as error:  # noqa: BLE001 - a fullgraph failure is a result to report, then retry with breaks
        if mode != "compiled":
            raise
        note = f"fullgraph failed ({type(error).__name__}); compiled with graph breaks"
        torch._dynamo.reset()
        compute_loss = torch.compile(loss_function(name, model, chunked=True), backend=sizes.compile_backend)
        step()
    synchronize(device)
    compile_s = time.perf_counter() - start if mode == "compiled" else None
    for _ in range(sizes.warmup - 1):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(sizes.timed):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / sizes.timed
    peak = read_peak_gb(device, sampler)
    torch._dynamo.reset()  # the model, its optimizer and compiled code go when this function returns
    return TrainResult(name, width, mode, setting.tokens_per_step / seconds, peak, flops / seconds / peak_rate,
                       compile_s, note)


def training_section(sizes: Sizes, device: torch.device, peak_rate: float, deadline: float) -> list[TrainResult]:
    results = []
    configs = []  # in the order of sizes.pairs: the seed's comparison first, so it is compiled first
    for _, mixer_width, llama, llama_width in sizes.pairs:
        configs += [config for config in (("mixer", mixer_width), (llama, llama_width)) if config not in configs]
    last_compile = 0.0
    for mode in ("eager", "eager, full logits", "compiled"):
        for name, width in configs:
            if mode == "compiled" and time.time() + last_compile > deadline:
                results.append(TrainResult(name, width, mode, math.nan, math.nan, math.nan,
                                           note="skipped: training budget spent"))
                continue
            results.append(time_training(name, width, mode, sizes, device, peak_rate))
            last_compile = results[-1].compile_s or last_compile
            r = results[-1]
            print(f"train {name} d{width} {mode}: {r.tokens_per_s:,.0f} tokens/s, {r.peak_gb:.2f} GB, "
                  f"MFU {100 * r.mfu:.0f} %" + (f", compiled in {r.compile_s:.0f} s" if r.compile_s else "")
                  + (f" ({r.note})" if r.note else ""), flush=True)
    return results


# ----- 2. batched generation --------------------------------------------------------------------------------


@torch.no_grad()
def generation_section(sizes: Sizes, device: torch.device) -> list[dict]:
    setting = Setting(sizes.gen_width, sizes.gen_depth, sizes.gen_prompt + sizes.gen_new + 2, 1)
    models = {}
    for name in ("mixer", "llama"):
        torch.manual_seed(0)
        models[name] = BUILDERS[name](setting).to(device=device, dtype=torch.bfloat16).eval()
    rows = []
    for batch in sizes.gen_batches:
        prompt = torch.randint(1, 8000, (batch, sizes.gen_prompt), device=device,
                               generator=torch.Generator(device=device).manual_seed(batch))
        row = {"batch": batch}
        # the static cache without transformers' automatic compile of the decode step on CUDA (a recompile
        # per batch size would take most of the time budget)
        for label, name, extra in (("mixer", "mixer", {}), ("llama_dynamic", "llama", {}),
                                   ("llama_static", "llama", {"cache_implementation": "static",
                                                              "disable_compile": True})):
            settings = dict(do_sample=False, pad_token_id=0, **extra)

            def generate(new: int, model=models[name], settings=settings, prompt=prompt) -> float:
                synchronize(device)
                start = time.perf_counter()
                model.generate(prompt, max_new_tokens=new, min_new_tokens=new, **settings)
                synchronize(device)
                return time.perf_counter() - start

            generate(2)  # warm-up
            one = min(generate(1) for _ in range(2))
            many = min(generate(sizes.gen_new) for _ in range(2))
            row[label] = batch * (sizes.gen_new - 1) / max(many - one, 1e-9)
        rows.append(row)
        print(f"generate batch {batch}: " + ", ".join(f"{k} {v:,.0f} tokens/s" for k, v in row.items()
                                                      if k != "batch"), flush=True)
    return rows


# ----- 3. accelerate launch runs ----------------------------------------------------------------------------

STATE_LINE = re.compile(r"processes: (\d+), distributed: (\w+), device: ([\w:]+), mixed precision: (\w+)")


def accelerate_runs(sizes: Sizes, work: Path, rehearsal: bool) -> list[dict]:
    """``accelerate launch`` train_accelerate.py: bf16 on one device, then FSDP2 on one process."""
    runs = []
    tokenizer = work / "bf16" / "tokenizer"
    for label, config, extra in (("bf16, one device", "single_device.yaml", []),
                                 ("bf16, FSDP2 on one process", "multi_gpu_fsdp.yaml", ["--num_processes", "1"])):
        output_dir = work / ("bf16" if "one device" in label else "fsdp2")
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO / "configuration" / "accelerate" / config), *extra, "--main_process_port", "29533",
                   str(REPO / "train_accelerate.py"), "--preset", str(REPO / sizes.train_preset),
                   "--output_dir", str(output_dir), "--max_steps", str(sizes.train_steps),
                   "--set", "train.mixed_precision=bf16", "--set", "train.resume=never",
                   "--set", f"train.eval_every={sizes.train_steps}", "--set", f"train.save_every={sizes.train_steps}",
                   "--set", "train.eval_batches=5", "--set", "train.max_minutes=null",
                   "--set", f"train.log_every={max(1, sizes.train_steps // 6)}",
                   "--set", "train.tensorboard=false", "--set", f"data.cache_dir={work / 'cache'}"]
        if rehearsal:
            command += ["--set", "data.max_documents=150", "--set", "data.vocab_size=300"]
        if tokenizer.is_dir():  # the second run reuses the first run's tokenizer
            command += ["--set", f"data.tokenizer={tokenizer}"]
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        seconds = time.perf_counter() - started
        log = done.stdout + done.stderr
        (work / f"{output_dir.name}.log").write_text(log)
        state = STATE_LINE.search(log)
        run = {"run": label, "returncode": done.returncode, "wall_s": seconds,
               "state": state.group(0) if state else "no accelerator state line in the log"}
        metrics = output_dir / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
        steps = [r for r in records if "train_loss" in r and "elapsed_s" in r]
        if len(steps) >= 2:
            windows = steps[-1]["train_windows_seen"] - steps[0]["train_windows_seen"]
            run["train_tokens_per_s"] = windows * _n_ctx(output_dir) / (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"])
            run["last_train_loss"] = steps[-1]["train_loss"]
        evals = [r for r in records if "val_bits_per_byte" in r]
        if evals:
            run["val_bits_per_byte"] = evals[-1]["val_bits_per_byte"]
        if done.returncode:
            run["error"] = log[-1500:]
        elif "FSDP" in label and not rehearsal and (not state or state.group(2) != "FSDP"):
            run["returncode"], run["error"] = 1, f"expected an FSDP run, the log says: {run['state']}"
        runs.append(run)
        print(f"accelerate {label}: rc {done.returncode}, {seconds:.0f} s, {run['state']}", flush=True)
    return runs


def _n_ctx(output_dir: Path) -> int:
    config = json.loads((output_dir / "run_config.json").read_text())
    return config["model"]["n_ctx"]


# ----- report -----------------------------------------------------------------------------------------------


def fmt(value: float | None, pattern: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def report(meta: dict, sizes: Sizes, training: list[TrainResult], generation: list[dict], runs: list[dict]) -> str:
    memory_note = "peak GPU memory (max allocated)" if meta["device"] == "cuda" else "peak process RSS (CPU rehearsal)"
    lines = [
        "# GPU check" + (" (CPU rehearsal: toy sizes, not GPU numbers)" if meta["rehearsal"] else ""),
        "",
        f"Written by `bash benchmarks/gpu_check.sh{' --cpu-rehearsal' if meta['rehearsal'] else ''}` in "
        f"{meta['elapsed_s']:.0f} s on {meta['device_name']}; torch {meta['torch']}, transformers "
        f"{meta['transformers']}; measured bf16 matmul {meta['matmul_tflops']:.0f} TFLOP/s "
        f"({sizes.matmul}^3).",
        "",
        f"## Training, bf16 autocast ({sizes.depth} layers, n_ctx {sizes.n_ctx}, batch {sizes.batch}, fused AdamW; "
        "loss without full-vocabulary logits unless 'full logits'; Llama with SDPA restricted to flash)",
        "",
        f"| model | d | mode | tokens/s | {memory_note} (GB) | MFU (measured matmul) | MFU (989 TFLOP/s) "
        "| compile (s) | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in training:
        spec_mfu = r.mfu * meta["matmul_tflops"] * 1e12 / H200_DENSE_BF16
        lines.append(f"| {r.model} | {r.width} | {r.mode} | {fmt(r.tokens_per_s, '{:,.0f}')} "
                     f"| {fmt(r.peak_gb, '{:.2f}')} | {fmt(100 * r.mfu, '{:.0f} %')} | {fmt(100 * spec_mfu, '{:.0f} %')} "
                     f"| {fmt(r.compile_s, '{:.0f}')} | {r.note} |")
    by_key = {(r.model, r.width, r.mode): r for r in training}
    lines += ["", "| comparison | mode | mixer/Llama tokens/s | Llama/mixer peak memory |", "|---|---|---:|---:|"]
    for label, mixer_width, llama, llama_width in sizes.pairs:
        for mode in ("eager", "eager, full logits", "compiled"):
            mixer, other = by_key.get(("mixer", mixer_width, mode)), by_key.get((llama, llama_width, mode))
            if mixer and other:
                lines.append(f"| {label} | {mode} | {fmt(mixer.tokens_per_s / other.tokens_per_s, '{:.2f}x')} "
                             f"| {fmt(other.peak_gb / mixer.peak_gb, '{:.2f}x')} |")
    lines += ["", f"## Batched greedy generation, tokens/s over all rows (d {sizes.gen_width}, {sizes.gen_depth} "
              f"layers, bf16 weights, {sizes.gen_prompt}-token prompts, {sizes.gen_new} new tokens, prefill "
              "excluded)", "",
              "| batch | mixer (cache) | Llama (dynamic KV) | Llama (static KV, not compiled) | mixer / best Llama |",
              "|---:|---:|---:|---:|---:|"]
    for row in generation:
        best = max(row["llama_dynamic"], row["llama_static"])
        lines.append(f"| {row['batch']} | {row['mixer']:,.0f} | {row['llama_dynamic']:,.0f} "
                     f"| {row['llama_static']:,.0f} | {row['mixer'] / best:.2f}x |")
    lines += ["", f"## `accelerate launch train_accelerate.py` ({sizes.train_preset}, {sizes.train_steps} steps, "
              "bf16)", "",
              "| run | exit | wall (s) | accelerator state | train tokens/s | last train loss | val bits/byte |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for run in runs:
        lines.append(f"| {run['run']} | {run['returncode']} | {run['wall_s']:.0f} | {run['state']} "
                     f"| {fmt(run.get('train_tokens_per_s'), '{:,.0f}')} | {fmt(run.get('last_train_loss'), '{:.3f}')} "
                     f"| {fmt(run.get('val_bits_per_byte'), '{:.4f}')} |")
    for run in runs:
        if "error" in run:
            lines += ["", f"### {run['run']} failed", "", "```", run["error"], "```"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-rehearsal", action="store_true", help="toy sizes on the CPU: every code path runs")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "runs" / "gpu_check"),
                        help="where gpu_check.md / gpu_check.json go (default $OUT, else runs/gpu_check)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_check_work"),
                        help="scratch folder of the accelerate runs (not copied back)")
    parser.add_argument("--train_budget_s", type=float, default=300,
                        help="compiled variants are skipped once the training section has run this long")
    parser.add_argument("--skip", nargs="*", default=[], choices=["training", "generation", "accelerate"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.cpu_rehearsal and not torch.cuda.is_available():
        raise SystemExit(
            "gpu_check: no CUDA device (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}). Run it on a GPU machine, or pass --cpu-rehearsal to run every code path on "
            "the CPU at toy sizes."
        )
    sizes = REHEARSAL if args.cpu_rehearsal else GPU
    device = torch.device("cpu" if args.cpu_rehearsal else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    peak_rate = matmul_rate(device, sizes.matmul)
    meta = {"rehearsal": args.cpu_rehearsal, "device": device.type, "torch": torch.__version__,
            "transformers": transformers.__version__, "matmul_tflops": peak_rate / 1e12,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"}
    print(f"gpu_check on {meta['device_name']}: bf16 matmul {peak_rate / 1e12:.1f} TFLOP/s", flush=True)
    training = ([] if "training" in args.skip else
                training_section(sizes, device, peak_rate, started + args.train_budget_s))
    generation = [] if "generation" in args.skip else generation_section(sizes, device)
    runs = [] if "accelerate" in args.skip else accelerate_runs(sizes, args.work, args.cpu_rehearsal)
    meta["elapsed_s"] = time.time() - started
    text = report(meta, sizes, training, generation, runs)
    (args.out / "gpu_check.md").write_text(text)
    (args.out / "gpu_check.json").write_text(json.dumps(
        {"meta": meta, "training": [asdict(r) for r in training], "generation": generation, "accelerate": runs},
        indent=1, default=str))
    print(text)
    print(f"wrote {args.out / 'gpu_check.md'} and gpu_check.json")
    failed = [run["run"] for run in runs if run["returncode"]]
    if failed:
        raise SystemExit(f"gpu_check: accelerate runs failed: {failed} (see the table)")


if __name__ == "__main__":
    main()
