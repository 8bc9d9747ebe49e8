"""F6: does a memory mixer train nearly as well per step as a full-context mixer of the whole length, and does a
transformer memory model do worse?

The seed (Language Mixers IV, "Memory Models"; MISSION.md anchors): a memory mixer reaches about the same loss per
step as a full-context model of the whole length, at about 25 % lower throughput.

Windows of ``chunks * chunk`` tokens; every variant is trained with the same seed, batches and schedule:

- ``full-context mixer``: `MixerForCausalLM` with ``n_ctx = chunks * chunk`` (every token sees all before it);
- ``memory mixer``: `MemoryMixerForCausalLM(memory_mode="past")`, ``n_ctx = chunk``: each earlier chunk becomes
  one embedding (mixer encoder, trained jointly) in the decoder's leading slots (``combine="token"``, fixed
  positions);
- ``memory transformer``: the same with a transformer (Llama) decoder;
- ``no-memory mixer``: ``memory_mode="none"``, the memory mixer's exact decoder layout with empty slots (what
  the chunks give without any memory);
- ``full-context transformer`` (``--full_transformer``): Llama over the whole window.

The comparison is on the same later tokens: the held-out loss of the tokens of chunks 2..n (the first chunk
is predicted from the same in-chunk context by every variant). Throughput is training tokens per second with
the evaluations' time taken out (on a shared CPU it is noisy; compare it within one run).

Run (about 6 minutes on 2 shared CPU cores)::

    python benchmarks/findings/f6_memory_vs_full_context.py
    python benchmarks/findings/f6_memory_vs_full_context.py --size large
    python benchmarks/findings/f6_memory_vs_full_context.py --size gpu --device cuda
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness import (  # noqa: E402
    Schedule,
    add_run_arguments,
    attention_heads,
    causal_loss,
    command_line,
    load_data,
    markdown_table,
    plot_band,
    resolve_presets,
    seed_stats,
    smooth,
    train_model,
    verdict,
    write_finding,
)

from modeling_memmix import MemoryMixerConfig, MemoryMixerForCausalLM, MixerConfig, MixerForCausalLM  # noqa: E402

NAME = "f6_memory_vs_full_context"
RECOVERED = "share of the full context's benefit the memories recover"

PRESETS = {
    "small": dict(chunk=16, chunks=4, hidden_size=64, layers=2, encoder_kernel=1, vocab_size=1000, steps=500,
                  batch_size=8, lr=5e-3, warmup_steps=30, eval_every=50, eval_windows=128, tolerance=0.02,
                  full_transformer=False, bf16=False, init_style="pytorch"),
    "large": dict(chunk=32, chunks=4, hidden_size=128, layers=4, encoder_kernel=1, vocab_size=4000, steps=2000,
                  batch_size=16, lr=3e-3, warmup_steps=100, eval_every=200, eval_windows=256, tolerance=0.02,
                  full_transformer=True, bf16=True, init_style="pytorch"),
    # the seed's lengths on one H200: 4 chunks of 128 against a 512-token full-context model, d 512, 8 layers
    "gpu": dict(chunk=128, chunks=4, hidden_size=512, layers=8, encoder_kernel=1, vocab_size=8000, steps=300,
                batch_size=16, lr=1e-3, warmup_steps=40, eval_every=50, eval_windows=128, tolerance=0.02,
                full_transformer=True, bf16=True, init_style="pytorch"),
    "tiny": dict(chunk=8, chunks=2, hidden_size=16, layers=1, encoder_kernel=1, vocab_size=1000, steps=3,
                 batch_size=2, lr=5e-3, warmup_steps=1, eval_every=2, eval_windows=4, tolerance=0.02,
                 full_transformer=True, bf16=False, init_style="pytorch"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, PRESETS)
    return parser


def variant_names(args) -> list[str]:
    names = ["full-context mixer", "memory mixer", "memory transformer", "no-memory mixer"]
    return names + (["full-context transformer"] if args.full_transformer else [])


def build_model(args, vocab_size: int, name: str):
    common = dict(vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                  num_attention_heads=attention_heads(args.hidden_size), init_style=args.init_style)
    if name.startswith("full-context"):
        block = "transformer" if name.endswith("transformer") else "mixer"
        return MixerForCausalLM(MixerConfig(n_ctx=args.chunk * args.chunks, block_type=block, **common))
    mode = "none" if name.startswith("no-memory") else "past"
    return MemoryMixerForCausalLM(MemoryMixerConfig(
        n_ctx=args.chunk, max_memories=args.chunks - 1, memory_mode=mode, combine="token", memory_positions="fixed",
        decoder_type="transformer" if name.endswith("transformer") else "mixer", encoder_layers=args.layers,
        encoder_mixer_kernel_size=args.encoder_kernel, decoder_mixer_kernel_size=1, **common))


def chunk_losses(losses: torch.Tensor, chunk: int) -> list[float]:
    """(T - 1,) next-token losses -> mean loss of the tokens of each chunk (chunk 1's first token has none)."""
    targets = torch.cat([losses.new_full((1,), math.nan), losses])  # index t = loss of token t
    return [float(targets[start : start + chunk].nanmean()) for start in range(0, targets.numel(), chunk)]


def run_variant(args, data, seed: int, name: str) -> dict:
    torch.manual_seed(seed)
    model = build_model(args, data.vocab_size, name)
    val = data.val_ids[: args.eval_windows]
    spent = {"eval": 0.0}

    def evaluate(model) -> dict:
        started = time.time()
        losses = causal_loss(model, val)
        per_chunk = chunk_losses(losses, args.chunk)
        spent["eval"] += time.time() - started
        return {"later": float(losses[args.chunk - 1 :].mean()), "first": per_chunk[0], "per_chunk": per_chunk}

    schedule = Schedule(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                        bf16=args.bf16, eval_every=args.eval_every, device=args.device)
    run = train_model(model, data.train_ids, schedule, seed, evaluate=evaluate)
    train_seconds = max(run.seconds - spent["eval"], 1e-9)
    tokens = run.steps_done * args.batch_size * args.chunk * args.chunks
    final = run.evals[-1][1]
    print(f"seed {seed} {name}: later-chunk loss {final['later']:.4f}, {tokens / train_seconds:.0f} tokens/s, "
          f"{run.seconds:.0f} s", flush=True)
    return {"final": final, "evals": run.evals, "train_losses": run.losses, "seconds": run.seconds,
            "train_seconds": train_seconds, "tokens_per_second": tokens / train_seconds,
            "parameters": sum(p.numel() for p in model.parameters())}


def effects(per_seed: dict[int, dict], args) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for results in per_seed.values():
        full, memory, transformer, none = (results[n]["final"]["later"] for n in
                                           ("full-context mixer", "memory mixer", "memory transformer",
                                            "no-memory mixer"))
        out.setdefault("memory mixer - full-context mixer (later chunks, relative)", []).append((memory - full) / full)
        out.setdefault("memory mixer - full-context mixer (later chunks, nats)", []).append(memory - full)
        out.setdefault("memory transformer - memory mixer (later chunks, nats)", []).append(transformer - memory)
        out.setdefault("no-memory mixer - memory mixer (later chunks, nats)", []).append(none - memory)
        out.setdefault("no-memory mixer - full-context mixer (later chunks, nats)", []).append(none - full)
        if none > full:  # a share of the full context's benefit exists only where it helps
            out.setdefault(RECOVERED, []).append((none - memory) / (none - full))
        out.setdefault("memory mixer / full-context mixer throughput", []).append(
            results["memory mixer"]["tokens_per_second"] / results["full-context mixer"]["tokens_per_second"])
        if "full-context transformer" in results:
            out.setdefault("memory transformer - full-context transformer (later chunks, nats)", []).append(
                transformer - results["full-context transformer"]["final"]["later"])
    return out


def plot(per_seed: dict[int, dict], names: list[str], args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for name in names:
        style = dict(linestyle="--" if "transformer" in name else "-")
        runs = [per_seed[seed][name] for seed in per_seed]
        steps = [step for step, _ in runs[0]["evals"]]
        plot_band(axes[0], steps, [[values["later"] for _, values in run["evals"]] for run in runs], name, **style)
        window = max(1, args.steps // 20)
        curves = [smooth(run["train_losses"], window) for run in runs]
        plot_band(axes[1], list(range(1, len(curves[0]) + 1)), curves, name, **style)
    axes[0].set_title(f"held-out loss of chunks 2..{args.chunks} (same tokens for every model)", fontsize=10)
    axes[1].set_title(f"training loss (all tokens, moving average of {max(1, args.steps // 20)} steps)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("training step")
        ax.set_ylabel("nats / token")
        ax.legend(fontsize=8)
    figure.suptitle(f"F6: {args.chunks} chunks of {args.chunk} vs a {args.chunks * args.chunk}-token full-context "
                    f"model, mean ± std over {len(per_seed)} seeds")
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> int:
    args = resolve_presets(build_parser().parse_args(argv), PRESETS)
    started = time.time()
    length = args.chunk * args.chunks
    data = load_data(length, args.vocab_size, Path(args.work_dir))
    names = variant_names(args)
    per_seed = {seed: {name: run_variant(args, data, seed, name) for name in names} for seed in args.seeds}
    effect = effects(per_seed, args)

    rows = []
    for name in names:
        runs = [per_seed[seed][name] for seed in args.seeds]
        per_chunk = [seed_stats([run["final"]["per_chunk"][c] for run in runs]) for c in range(args.chunks)]
        rows.append([name, str(seed_stats([run["final"]["later"] for run in runs])),
                     " / ".join(f"{s.mean:.3f}" for s in per_chunk),
                     str(seed_stats([run["tokens_per_second"] for run in runs])),
                     f"{runs[0]['parameters'] / 1e6:.3f} M"])
    table = markdown_table(["variant", f"held-out loss, chunks 2..{args.chunks}",
                            "loss per chunk (mean over seeds)", "train tokens/s", "parameters"], rows)
    effect_table = markdown_table(
        ["per-seed effect", "mean ± std", "seeds"],
        [[label, str(seed_stats(values)), ", ".join(f"{v:+.4f}" for v in values)] for label, values in effect.items()])

    gap = effect["memory mixer - full-context mixer (later chunks, relative)"]
    within = [args.tolerance - g for g in gap]
    worse = effect["memory transformer - memory mixer (later chunks, nats)"]
    helps = effect["no-memory mixer - memory mixer (later chunks, nats)"]
    context = effect["no-memory mixer - full-context mixer (later chunks, nats)"]
    call_a, call_b, call_c = verdict(within), verdict(worse), verdict(helps)
    untested = call_a == "reproduced" and verdict(context) != "reproduced"
    shares = effect.get(RECOVERED, [])
    recovered = (f"the memories recover {seed_stats(shares)} of the full context's benefit over the same-layout "
                 f"no-memory mixer ({len(shares)} of {len(gap)} seeds have a benefit to recover)" if shares else
                 "the full context gives no benefit over the same-layout no-memory mixer in any seed, so there is "
                 "none for the memories to recover")
    if untested:  # equal to the full-context model, but so is a chunk alone: nothing to recover yet
        call_a = "inconclusive"
    n = len(args.seeds)
    verdict_text = (
        f"(a) memory mixer nearly as good per step as the full-context mixer (within {100 * args.tolerance:.0f} % "
        f"on the later chunks): **{call_a} at this scale**: relative gap {seed_stats([100 * g for g in gap])} % "
        f"({seed_stats(effect['memory mixer - full-context mixer (later chunks, nats)'])} nats/token) over {n} "
        f"seeds; {recovered} (memories help, no-memory - memory mixer: {call_c}, {seed_stats(helps)} "
        f"nats/token). (b) the transformer memory model does worse: **{call_b} at this "
        f"scale**: memory transformer - memory mixer = {seed_stats(worse)} nats/token. Throughput memory / full: "
        f"{seed_stats(effect['memory mixer / full-context mixer throughput'])} (seed: about 0.75)."
    )
    if untested:
        verdict_text += (
            f" (a) is called inconclusive although the gap is small: the full-context mixer is not yet reliably "
            f"better than a chunk alone ({seed_stats(context)} nats/token), so there is no context benefit to "
            "match."
        )
    settings = (
        f"Built-in corpus (vocabulary {data.vocab_size}, {data.bytes_per_token:.3f} bytes/token held out), windows "
        f"of {length} tokens = {args.chunks} chunks of {args.chunk}, {data.train_ids.shape[0]} training windows, "
        f"{min(args.eval_windows, data.val_ids.shape[0])} held-out windows. Width {args.hidden_size}, {args.layers} "
        f"decoder layers; memory models: a jointly trained {args.layers}-layer mixer encoder (kernel "
        f"{args.encoder_kernel}), full-width memories, {args.chunks - 1} fixed memory slots, flat decoder. "
        f"{args.steps} steps x {args.batch_size} windows, AdamW lr {args.lr}, warmup {args.warmup_steps} + cosine, "
        f"grad clip 1, {'bf16 autocast' if args.bf16 else 'fp32'}, init {args.init_style}, device {args.device}, {args.threads} "
        f"thread(s). Wall time {time.time() - started:.0f} s."
    )
    scale = (
        "Seed's claim: the memory mixer reaches about the same loss per step as a full-context model of the whole "
        "length (about 25 % lower throughput), and a transformer memory model trains worse. At this scale the "
        f"full-context mixer is {seed_stats(context)} nats/token from a chunk alone (no-memory - full; positive = "
        "the context helps), so the comparison mostly measures how fast each model learns the in-chunk "
        "statistics, where the transformers are ahead; the seed's claim concerns windows of 512-1024 tokens "
        "trained on billions of tokens, where distant context is worth much more than the few hundredths of a nat "
        "it is worth here. It needs a full-context model that clearly beats the chunk-only model first: longer "
        "training (`--size large`: 2000 steps of 32-token chunks) or the GPU preset (gpu_findings.sh: 4 x 128 "
        "tokens, d 512)."
    )
    results = {"args": vars(args), "effects": effect,
               "verdicts": {"memory_near_full": call_a, "transformer_memory_worse": call_b, "memories_help": call_c},
               "per_seed": {str(s): {n: {k: v for k, v in r.items()} for n, r in runs.items()}
                            for s, runs in per_seed.items()}}
    body = "\n\n".join([table, "Effects per seed:", effect_table, scale])
    write_finding(NAME, "F6: memory mixer vs full-context mixer, per training step",
                  command_line("benchmarks/findings/f6_memory_vs_full_context.py", argv), settings, body,
                  verdict_text, results, plot(per_seed, names, args), Path(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
