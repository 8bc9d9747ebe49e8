"""Batched decoding and memory footprint: the cached causal mixer against transformers' ``LlamaForCausalLM`` of
matched width, depth, feed-forward size, vocabulary and context, measured side by side in one run.

1. Decode tokens/s (all rows together) at batch 1, 8, 32, 64: the mixer with its incremental cache, Llama with
   its dynamic KV cache and with transformers' static cache (``cache_implementation="static"``). Greedy
   ``generate``; decode speed is ``B * (N - 1) / (t(N new tokens) - t(1 new token))`` so the prefill is
   excluded; each timing is the best of ``--repeats`` runs.
2. Peak resident memory (RSS) of one training step (forward, backward, AdamW) and of greedy generation with the
   cache, including the model's weights: each measured in a fresh process, sampled every millisecond, above
   the process's RSS once its libraries are loaded, so one measurement cannot inherit another's peak.

Run: ``python benchmarks/bench_batched_generation.py`` (about five minutes on 2 CPU cores; ``--batches 1,8`` for a
quick look). Prints Markdown tables and writes them to ``benchmarks/RESULTS_batched_generation.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generation import best_time  # noqa: E402

from modeling_memmix import MixerConfig, MixerForCausalLM  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--n-ctx", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=4, help="attention heads of the Llama baseline")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per row")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--train-batch", type=int, default=8, help="windows of n_ctx tokens per training step")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).with_name("RESULTS_batched_generation.md")))
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one memory measurement
    return parser.parse_args(argv)


def build(kind: str, args) -> torch.nn.Module:
    torch.manual_seed(0)
    config = MixerConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                         n_ctx=args.n_ctx)
    if kind == "mixer":
        return MixerForCausalLM(config)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=config.intermediate_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, max_position_embeddings=args.n_ctx,
        bos_token_id=None, eos_token_id=None, pad_token_id=0, attn_implementation="sdpa"))


@torch.no_grad()
def decode_rate(model, batch: int, args, **settings) -> float:
    """Tokens/s over all rows, prefill excluded."""
    prompt = torch.randint(1, args.vocab, (batch, args.prompt), generator=torch.Generator().manual_seed(batch))
    settings = dict(do_sample=False, pad_token_id=0, **settings)
    model.generate(prompt, max_new_tokens=2, min_new_tokens=2, **settings)  # warm-up
    one = best_time(lambda: model.generate(prompt, max_new_tokens=1, min_new_tokens=1, **settings), args.repeats)
    many = best_time(lambda: model.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                            **settings), args.repeats)
    return batch * (args.new_tokens - 1) / max(many - one, 1e-9)


def decode_table(args) -> tuple[list[str], list[dict]]:
    mixer, llama = build("mixer", args).eval(), build("llama", args).eval()
    rows, records = [], []
    for batch in [int(b) for b in args.batches.split(",")]:
        record = {"batch": batch, "mixer": decode_rate(mixer, batch, args),
                  "llama_dynamic": decode_rate(llama, batch, args),
                  "llama_static": decode_rate(llama, batch, args, cache_implementation="static")}
        records.append(record)
        best_llama = max(record["llama_dynamic"], record["llama_static"])
        rows.append(f"| {batch} | {record['mixer']:.0f} | {record['llama_dynamic']:.0f} | "
                    f"{record['llama_static']:.0f} | {record['mixer'] / best_llama:.2f}x |")
        print(rows[-1], flush=True)
    return rows, records


def rss_mb() -> float:
    """Current resident memory of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


class PeakSampler:
    """Samples the resident memory every millisecond in a background thread; ``peak`` is the largest seen."""

    def __init__(self):
        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.001)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def memory_probe(kind: str, what: str, args) -> dict:
    """One measurement in this (fresh) process: peak RSS growth of a training step or of generation, above the
    process with its libraries loaded (the model's weights included)."""
    torch.set_num_threads(args.threads)
    torch.ones(1) @ torch.ones(1)  # load the math libraries before the baseline is read
    before = rss_mb()
    with PeakSampler() as sampler:
        run_probe(kind, what, args)
    return {"kind": kind, "what": what, "peak_mb": sampler.peak - before}


def run_probe(kind: str, what: str, args) -> None:
    model = build(kind, args)
    ids = torch.randint(1, args.vocab, (args.train_batch, args.n_ctx), generator=torch.Generator().manual_seed(0))
    if what == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    else:
        model.eval()
        with torch.no_grad():
            model.generate(ids[:, : args.prompt], max_new_tokens=args.n_ctx - args.prompt,
                           min_new_tokens=args.n_ctx - args.prompt, do_sample=False, pad_token_id=0)


def memory_table(args, argv: list[str]) -> tuple[list[str], dict]:
    results = {}
    for what in ("train", "generate"):
        for kind in ("mixer", "llama"):
            command = [sys.executable, __file__, *argv, "--memory-probe", f"{kind}:{what}"]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[(kind, what)] = json.loads(output.strip().splitlines()[-1])["peak_mb"]
    rows = [
        f"| training step (batch {args.train_batch} x {args.n_ctx} tokens, AdamW) | {results[('mixer', 'train')]:.0f} "
        f"| {results[('llama', 'train')]:.0f} | {results[('llama', 'train')] / results[('mixer', 'train')]:.2f}x |",
        f"| greedy generation with the cache ({args.train_batch} rows, {args.prompt} -> {args.n_ctx} tokens) | "
        f"{results[('mixer', 'generate')]:.0f} | {results[('llama', 'generate')]:.0f} | "
        f"{results[('llama', 'generate')] / results[('mixer', 'generate')]:.2f}x |",
    ]
    return rows, {f"{k}_{w}": v for (k, w), v in results.items()}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.memory_probe:
        kind, what = args.memory_probe.split(":")
        print(json.dumps(memory_probe(kind, what, args)))
        return
    torch.set_num_threads(args.threads)
    header = (f"d {args.hidden}, {args.layers} layers, n_ctx {args.n_ctx}, vocabulary {args.vocab}, Llama with "
              f"{args.heads} heads and the same feed-forward width; {args.threads} torch threads; torch "
              f"{torch.__version__}, transformers {transformers.__version__}, {platform.machine()}")
    print(header)
    print("| batch | mixer tokens/s (cache) | Llama tokens/s (dynamic KV) | Llama tokens/s (static KV) | mixer / best Llama |")
    decode_rows, decode = decode_table(args)
    memory_rows, memory = memory_table(args, argv)
    text = "\n".join([
        "# Batched decoding and memory footprint", "",
        f"Command: `python benchmarks/bench_batched_generation.py {' '.join(argv)}`".rstrip() + "", "",
        header + ".", "",
        f"## Decode tokens/s, all rows together ({args.prompt}-token prompts, {args.new_tokens} new tokens, "
        "prefill excluded, best of repeats)", "",
        "| batch | mixer tokens/s (cache) | Llama tokens/s (dynamic KV) | Llama tokens/s (static KV) | mixer / best Llama |",
        "|---:|---:|---:|---:|---:|", *decode_rows, "",
        "## Peak resident memory above the empty process (MB, each in a fresh process)", "",
        "| what | mixer | Llama | Llama / mixer |", "|---|---:|---:|---:|", *memory_rows, "",
        "```json", json.dumps({"decode": decode, "memory_mb": memory}, indent=2), "```", "",
    ])
    Path(args.output).write_text(text, encoding="utf-8")
    print("\n".join(memory_rows))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
