"""Long contexts on this CPU: the causal mixer, transformers' ``LlamaForCausalLM`` (with its KV cache) and the memory
model at a fixed chunk length, side by side for context lengths 256 -> 4096.

Every model has the same width, depth, feed-forward width (4d) and vocabulary; the mixer and Llama are built for
each context length ``L`` (the mixer's mixing matrices are ``L x L``: its parameters grow as ``L^2``), the memory
model keeps its chunk length ``--chunk`` and holds ``L / chunk - 1`` memories, so its decoder costs per token what
a ``chunk``-token model does however long the context. Three measures per length:

1. **training tokens/s**: full steps (forward with loss, backward, fused AdamW; bf16 autocast; loss without
   full-vocabulary logits, the training loop's defaults) on ``--train_tokens`` tokens per step (batch
   ``train_tokens / L``); the three models are timed in interleaved rounds, each keeping its fastest step;
2. **peak memory of a training step**: resident memory (RSS) above the process with its libraries loaded,
   weights, gradients and optimizer state included, sampled every millisecond, each (model, length) in a fresh
   process (the sampler of ``bench_batched_generation.py``);
3. **decode ms/token**: greedy one-token forwards with each model's cache (mixer: its incremental cache; Llama:
   its dynamic KV cache; memory model: memories + the current chunk's cache), as ``generate`` runs them, after a
   prompt that ends ``--new_tokens`` before ``L`` (prefill untimed, best of repeats): the cost of a token near
   the end of a full context.

Writes ``benchmarks/RESULTS_long_context.md`` (tables, crossover points) and one PNG per measure
(``benchmarks/long_context_*.png``). Run (about seven minutes on 2 CPU cores)::

    python benchmarks/bench_long_context.py
    python benchmarks/bench_long_context.py --lengths 256 512 --hidden 64 --layers 2 --output /tmp/long.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training  # noqa: E402
from bench_batched_generation import PeakSampler, rss_mb  # noqa: E402
from bench_training import CLOCKS, TUNED, make_step, use_clock  # noqa: E402

from modeling_memmix import MemoryMixerConfig, MemoryMixerForCausalLM, MixerConfig, MixerForCausalLM  # noqa: E402

MODELS = ("mixer", "llama", "memory")
LABELS = {"mixer": "causal mixer", "llama": "Llama (KV cache)", "memory": "memory mixer"}
HEAD_DIM = 64
MEASURES = {  # key: (title, unit, higher is better)
    "train_tokens_per_s": ("training tokens/s (bf16)", "tokens/s", True),
    "train_peak_mb": ("peak memory of a training step", "MB", False),
    "decode_ms_per_token": ("decode ms/token near the end of the context", "ms/token", False),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--chunk", type=int, default=256, help="the memory model's chunk length")
    parser.add_argument("--train_tokens", type=int, default=4096, help="tokens per training step")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved training-step rounds per length")
    parser.add_argument("--new_tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="time by wall time, or by this process's CPU time (with --threads 1 on a shared machine)")
    parser.add_argument("--no_memory_probes", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS_long_context.md"))
    parser.add_argument("--plots", type=Path, default=None,
                        help="folder of the PNG plots (default: the output's folder)")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: "model:length", one measurement
    args = parser.parse_args(argv)
    for length in args.lengths:
        if length % args.chunk or length < args.chunk:
            raise ValueError(f"--lengths value {length} must be a multiple of --chunk={args.chunk}")
        if length > args.train_tokens or args.train_tokens % length:
            raise ValueError(f"--train_tokens={args.train_tokens} must be a multiple of each length ({length})")
        if length <= args.new_tokens:
            raise ValueError(f"--new_tokens={args.new_tokens} must be below each length ({length})")
    if args.hidden % HEAD_DIM:
        raise ValueError(f"--hidden={args.hidden} must be a multiple of the Llama head size {HEAD_DIM}")
    return args


def build(name: str, length: int, args) -> nn.Module:
    """One of the three models for context length ``length`` (the memory model: fixed chunk, more memories)."""
    torch.manual_seed(0)
    shared = dict(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                  intermediate_size=4 * args.hidden)
    if name == "mixer":
        return MixerForCausalLM(MixerConfig(**shared, n_ctx=length))
    if name == "memory":
        return MemoryMixerForCausalLM(MemoryMixerConfig(**shared, n_ctx=args.chunk,
                                                        max_memories=max(1, length // args.chunk - 1)))
    return LlamaForCausalLM(LlamaConfig(**shared, num_attention_heads=args.hidden // HEAD_DIM,
                                        max_position_embeddings=length, tie_word_embeddings=False,
                                        attn_implementation="sdpa", bos_token_id=None, eos_token_id=None,
                                        pad_token_id=0))


def token_batch(length: int, rows: int, vocab: int) -> torch.Tensor:
    return torch.randint(1, vocab, (rows, length), generator=torch.Generator().manual_seed(length))


# ----- measures -----------------------------------------------------------------------------------------------


def training_rates(length: int, args) -> dict[str, float]:
    """Tokens/s of a training step of each model at ``length``, interleaved rounds, fastest step each."""
    batch = token_batch(length, args.train_tokens // length, args.vocab)
    steps = {}
    for name in MODELS:
        steps[name], _ = make_step(name, build(name, length, args).train(), batch, "bf16", TUNED)
    best = dict.fromkeys(MODELS, math.inf)
    for _ in range(args.rounds):
        for name in MODELS:
            start = bench_training.clock()
            steps[name]()
            best[name] = min(best[name], bench_training.clock() - start)
    return {name: args.train_tokens / seconds for name, seconds in best.items()}


@torch.no_grad()
def decode_ms_per_token(name: str, length: int, args) -> float:
    """ms per new token, greedy, with the model's cache, after a prompt ending ``new_tokens`` before ``length``.

    Each repeat prefills the prompt (untimed: at 4096 tokens its cost and its variance dwarf a few decode steps,
    so ``t(N new) - t(1 new)`` of ``generate`` is too noisy here), then times ``new_tokens`` one-token forwards
    that feed each step's ``cache`` back, as ``generate`` does; the best repeat counts."""
    model = build(name, length, args).eval()
    prompt = token_batch(length - args.new_tokens, 1, args.vocab)
    best = math.inf
    for _ in range(args.repeats + 1):  # the first is a warm-up
        output = model(input_ids=prompt, use_cache=True)
        start = bench_training.clock()
        for _ in range(args.new_tokens):
            token = output.logits[:, -1:].argmax(-1)
            output = model(input_ids=token, cache=output.cache, use_cache=True)
        best = min(best, bench_training.clock() - start)
    return 1000.0 * best / args.new_tokens


def memory_probe(name: str, length: int, args) -> dict:
    """In this (fresh) process: peak RSS growth of building ``name`` and one training step at ``length``."""
    torch.ones(1) @ torch.ones(1)  # load the math libraries before the baseline is read
    before = rss_mb()
    with PeakSampler() as sampler:
        batch = token_batch(length, args.train_tokens // length, args.vocab)
        make_step(name, build(name, length, args).train(), batch, "bf16", TUNED)  # builds and runs one step
    return {"model": name, "length": length, "peak_mb": sampler.peak - before}


def probe_in_fresh_process(name: str, length: int, argv: list[str]) -> float:
    command = [sys.executable, __file__, *argv, "--memory-probe", f"{name}:{length}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"memory probe {name}:{length} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


# ----- report -------------------------------------------------------------------------------------------------


TIE = 0.10  # two models within 10 % of each other count as level: a shared machine's noise is about that large


def crossovers(results: dict[str, dict[int, dict[str, float]]], lengths: list[int]) -> list[str]:
    """For each measure and pair of models: which is better over which lengths (within ``TIE`` = level), and the
    lengths between which the better one changes."""
    lines = []
    for measure, (title, _, higher_better) in MEASURES.items():
        for first, second in (("mixer", "llama"), ("memory", "mixer"), ("memory", "llama")):
            rows = [(length, results[measure][length]) for length in lengths if length in results.get(measure, {})]
            if not rows:
                continue
            verdicts = []  # (length, who): first, second or None (level)
            for length, row in rows:
                ratio = row[first] / row[second] if higher_better else row[second] / row[first]
                verdicts.append((length, first if ratio > 1 + TIE else second if ratio < 1 / (1 + TIE) else None))
            runs = []  # consecutive lengths with one verdict: [who, first length, last length]
            for length, who in verdicts:
                if runs and runs[-1][0] == who:
                    runs[-1][2] = length
                else:
                    runs.append([who, length, length])
            spans = "; ".join(f"{LABELS[who] + ' better' if who else 'level (within 10 %)'} at "
                              f"{low if low == high else f'{low}-{high}'}" for who, low, high in runs)
            decided = [(length, who) for length, who in verdicts if who]
            flips = [(decided[i][0], decided[i + 1][0], decided[i + 1][1]) for i in range(len(decided) - 1)
                     if decided[i][1] != decided[i + 1][1]]
            verdict = "; ".join(f"crossover between {low} and {high} tokens ({LABELS[who]} better from {high})"
                                for low, high, who in flips) or "no crossover"
            lines.append(f"- {title}, {LABELS[first]} vs {LABELS[second]}: {spans} -> {verdict}.")
    return lines


def measure_table(measure: str, results: dict, lengths: list[int]) -> list[str]:
    title, unit, _ = MEASURES[measure]
    fmt = "{:,.0f}" if unit != "ms/token" else "{:.2f}"
    lines = [f"### {title} ({unit})", "",
             "| context | " + " | ".join(LABELS[name] for name in MODELS) + " | mixer / Llama | memory / mixer |",
             "|---:|" + "---:|" * (len(MODELS) + 2)]
    for length in lengths:
        row = results[measure].get(length)
        if row is None:
            continue
        lines.append(f"| {length} | " + " | ".join(fmt.format(row[name]) for name in MODELS)
                     + f" | {row['mixer'] / row['llama']:.2f}x | {row['memory'] / row['mixer']:.2f}x |")
    return lines + [""]


def plot(measure: str, results: dict, lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title, unit, _ = MEASURES[measure]
    figure, axes = plt.subplots(figsize=(6, 4))
    for name in MODELS:
        xs = [length for length in lengths if length in results[measure]]
        axes.plot(xs, [results[measure][length][name] for length in xs], marker="o", label=LABELS[name])
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    axes.set_xticks(lengths, [str(length) for length in lengths])
    axes.set_xlabel("context length (tokens)")
    axes.set_ylabel(unit)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "process" and torch.get_num_threads() != 1:
        raise ValueError("--clock process sums the CPU time of all threads; use it with --threads 1")
    use_clock(args.clock)
    if args.memory_probe:
        name, length = args.memory_probe.split(":")
        print(json.dumps(memory_probe(name, int(length), args)))
        return
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    results: dict[str, dict[int, dict[str, float]]] = {measure: {} for measure in MEASURES}
    for length in args.lengths:
        results["train_tokens_per_s"][length] = training_rates(length, args)
        results["decode_ms_per_token"][length] = {name: decode_ms_per_token(name, length, args) for name in MODELS}
        if not args.no_memory_probes:
            results["train_peak_mb"][length] = {name: probe_in_fresh_process(name, length, argv) for name in MODELS}
        print(f"{length}: " + "; ".join(f"{measure} " + ", ".join(f"{name} {value:.4g}" for name, value in
                                                                  row[length].items())
                                        for measure, row in results.items() if length in row), flush=True)
    measures = [measure for measure in MEASURES if results[measure]]
    plots = args.plots or args.output.parent
    plots.mkdir(parents=True, exist_ok=True)
    for measure in measures:
        plot(measure, results, args.lengths, plots / f"long_context_{measure}.png")
    text = [
        "# Long contexts: causal mixer vs Llama (KV cache) vs the memory mixer",
        "",
        f"Written by `{' '.join(['python benchmarks/bench_long_context.py', *argv])}` in "
        f"{time.perf_counter() - started:.0f} s. Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, transformers "
        f"{transformers.__version__}; timed by {'wall time' if args.clock == 'wall' else 'CPU time of the process'}."
        f" Load average (1 min) before / after: {load_before:.1f} / "
        f"{os.getloadavg()[0]:.1f} (a shared machine: compare models within a length, they were measured "
        "together).",
        "",
        f"All models: d {args.hidden}, {args.layers} layers, feed-forward 4d, vocabulary {args.vocab}; Llama with "
        f"head size {HEAD_DIM} and SDPA attention; the memory mixer with chunks of {args.chunk} tokens, "
        f"an encoder of the same width and depth and `L / {args.chunk} - 1` memories. Training: {args.train_tokens} tokens per step (batch {args.train_tokens} / L), bf16 autocast, "
        "fused AdamW, loss without full-vocabulary logits. Decode: batch 1, greedy one-token forwards with the "
        f"cache after a prompt of L - {args.new_tokens} tokens, {args.new_tokens} new tokens, prefill untimed.",
        "",
        "![training tokens/s](long_context_train_tokens_per_s.png)",
        "![peak memory](long_context_train_peak_mb.png)" if results["train_peak_mb"] else "",
        "![decode ms/token](long_context_decode_ms_per_token.png)",
        "",
        "## Crossover points",
        "",
        *crossovers(results, args.lengths),
        "",
        "## Tables",
        "",
    ]
    for measure in measures:
        text += measure_table(measure, results, args.lengths)
    text += ["```json", json.dumps({measure: {str(k): v for k, v in rows.items()} for measure, rows in
                                   results.items()}, indent=1), "```", ""]
    args.output.write_text("\n".join(text), encoding="utf-8")
    print("\n".join(crossovers(results, args.lengths)))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
