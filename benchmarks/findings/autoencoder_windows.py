"""Autoencoder accuracy against window length: how much of a held-out window of the built-in corpus each kind of
autoencoder regenerates exactly from its one embedding, at a fixed training budget per run.

Variants (encoder and decoder alike, the recipe's other settings unchanged):

- ``flat``: one ``n_ctx x n_ctx`` mixing matrix per layer (``mixer_heads=0``, ``mixer_kernel_size=1``);
- ``heads``: ``--heads`` mixer heads;
- ``kernel``: the seed's convolutional mixing with ``--kernel`` taps over neighbouring channels;
- ``transformer``: Llama blocks at half the width (the seed's comparison at matched memory), unrolled input.

Every run trains the same number of steps (``--steps``; a wall-clock cap ``--minutes`` stops it early) on the
same batches (seed ``--seed``), then scores ``--eval_windows`` held-out windows. Writes
``docs/findings/autoencoder_windows.{md,json,png}``::

    python benchmarks/findings/autoencoder_windows.py                      # 8..128 tokens, 4 variants
    python benchmarks/findings/autoencoder_windows.py --windows 32 --variants kernel --steps 3000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.findings.harness import (  # noqa: E402
    FINDINGS_DIR,
    Schedule,
    autoencoder_scores,
    command_line,
    load_data,
    markdown_table,
    train_model,
    write_finding,
)
from modeling_memmix import MixerAutoencoder, MixerAutoencoderConfig  # noqa: E402

VARIANTS = ("flat", "heads", "kernel", "transformer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers each")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kernel", type=int, default=16)
    parser.add_argument("--decoder_input", default="repeat", choices=("repeat", "unroll"),
                        help="for the mixer variants (the transformer always unrolls)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock cap per run")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup_steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval_windows", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out_dir", default=str(FINDINGS_DIR))
    return parser


def variant_config(variant: str, n_ctx: int, vocab_size: int, args: argparse.Namespace) -> MixerAutoencoderConfig:
    common = {"vocab_size": vocab_size, "n_ctx": n_ctx, "num_hidden_layers": args.layers}
    if variant == "transformer":
        width = args.hidden_size // 2
        return MixerAutoencoderConfig(**common, hidden_size=width, encoder_type="transformer",
                                      decoder_type="transformer", decoder_input="unroll",
                                      num_attention_heads=max(1, width // 32))
    mixing = {"flat": {}, "heads": {"mixer_heads": args.heads}, "kernel": {"mixer_kernel_size": args.kernel}}[variant]
    return MixerAutoencoderConfig(**common, hidden_size=args.hidden_size, decoder_input=args.decoder_input, **mixing)


def run_one(variant: str, n_ctx: int, args: argparse.Namespace) -> dict:
    data = load_data(n_ctx)
    torch.manual_seed(args.seed)
    model = MixerAutoencoder(variant_config(variant, n_ctx, data.vocab_size, args))
    schedule = Schedule(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                        bf16=True, max_minutes=args.minutes)
    run = train_model(model, data.train_ids, schedule, seed=args.seed)
    scores = autoencoder_scores(model, data.val_ids[: args.eval_windows])
    print(f"{variant:>11} n_ctx {n_ctx:>4}: accuracy {scores['accuracy']:.3f}, CE {scores['ce']:.3f} "
          f"({run.steps_done} steps, {run.seconds:.0f} s)", flush=True)
    return {"variant": variant, "n_ctx": n_ctx, "steps": run.steps_done, "seconds": run.seconds,
            "parameters": sum(p.numel() for p in model.parameters()), **scores}


def plot(results: list[dict], args: argparse.Namespace):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6, 4))
    for variant in args.variants:
        rows = sorted((r for r in results if r["variant"] == variant), key=lambda r: r["n_ctx"])
        axis.plot([r["n_ctx"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=variant)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("window length (tokens)")
    axis.set_ylabel("held-out token accuracy")
    axis.set_ylim(0, 1)
    axis.set_title(f"autoencoder regeneration after {args.steps} steps")
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [run_one(variant, n_ctx, args) for n_ctx in args.windows for variant in args.variants]
    table = markdown_table(["variant", "window", "token accuracy", "CE", "I_e", "steps", "seconds", "parameters"],
                           [[r["variant"], r["n_ctx"], r["accuracy"], r["ce"], r["information"], r["steps"],
                             round(r["seconds"]), r["parameters"]] for r in results])
    settings = (f"Mixer width {args.hidden_size} ({args.hidden_size // 2} for the transformer), {args.layers}+"
                f"{args.layers} layers, heads {args.heads}, kernel {args.kernel}, decoder input "
                f"`{args.decoder_input}` for the mixers; {args.steps} steps x {args.batch_size} windows, lr {args.lr}, "
                f"warmup {args.warmup_steps} + cosine, bf16 autocast, seed {args.seed}; {args.threads} CPU thread(s).")
    best = max(results, key=lambda r: (r["n_ctx"], r["accuracy"]))
    summary = (f"at the longest window ({best['n_ctx']} tokens) the best variant is `{best['variant']}` with "
               f"{best['accuracy']:.1%} of tokens regenerated")
    write_finding("autoencoder_windows", "Autoencoder token accuracy against window length",
                  command_line("benchmarks/findings/autoencoder_windows.py", argv), settings, table, summary,
                  {"args": vars(args), "results": results}, plot(results, args), Path(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
