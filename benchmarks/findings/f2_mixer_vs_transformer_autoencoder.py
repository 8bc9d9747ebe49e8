"""F2: are mixer autoencoders far better than transformer autoencoders at matched memory?

The seed ("Masked Mixers for Language Generation and Retrieval", and Language Mixers IV): "using masked mixers for
encoder and decoder allows for far greater input autoencoding accuracy than a transformer encoder/decoder pair
for a given model size"; transformers need about twice the memory of a mixer of the same width, so a mixer of
width d is compared with a transformer of width d/2. The seed's figures (MISSION.md anchors): information retained
I_e / Hamming accuracy 0.952 / 0.770 for the mixer autoencoder vs 0.676 / 0.388 for the transformer one.

Variants (`MixerAutoencoder`, same seed, batches and schedule; encoder and decoder of one kind each):

- ``mixer k=K``: width d, mixer kernel ``--kernel`` in encoder and decoder, ``decoder_input="repeat"``;
- ``mixer flat``: width d, one flat mixing matrix per layer, ``decoder_input="repeat"``;
- ``transformer d/2``: Llama blocks of width d/2 (head size 32), ``decoder_input="unroll"`` (a transformer
  decoder fed the same vector at every position cannot tell positions apart; see F3).

Measures on held-out windows: reconstruction CE, Hamming (token) accuracy, I_e = 1 - CE / ln V, beside the
unigram baseline (the training split's token frequencies at every position); parameters and training time.

Every variant is trained under two initializations (``--inits``): ``memmix`` (memmix's default N(0, 0.02)) and
``pytorch`` (``init_style="pytorch"``, the seed's research code), because F3 found that the unrolled input the
transformer reads starts much slower under memmix's init.

Run (about 6 minutes on 2 quiet CPU cores)::

    python benchmarks/findings/f2_mixer_vs_transformer_autoencoder.py
    python benchmarks/findings/f2_mixer_vs_transformer_autoencoder.py --size large
    python benchmarks/findings/f2_mixer_vs_transformer_autoencoder.py --size gpu --device cuda   # one H200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness import (  # noqa: E402
    Schedule,
    add_run_arguments,
    attention_heads,
    command_line,
    effect_table,
    load_data,
    markdown_table,
    plot_band,
    resolve_presets,
    seed_stats,
    smooth,
    train_autoencoder,
    unigram_baseline,
    verdict,
    write_finding,
)

from modeling_memmix import MixerAutoencoderConfig  # noqa: E402

NAME = "f2_mixer_vs_transformer_autoencoder"
SEED_FIGURES = {"mixer": {"information": 0.952, "accuracy": 0.770},
                "transformer": {"information": 0.676, "accuracy": 0.388}}

PRESETS = {
    "small": dict(n_ctx=16, vocab_size=1000, hidden_size=128, layers=2, kernel=8, steps=350, batch_size=32, lr=3e-3,
                  warmup_steps=20, eval_windows=512, inits=["memmix", "pytorch"], bf16=True),
    "large": dict(n_ctx=64, vocab_size=4000, hidden_size=256, layers=2, kernel=8, steps=2000, batch_size=32,
                  lr=2e-3, warmup_steps=50, eval_windows=512, inits=["memmix", "pytorch"], bf16=True),
    # the seed's kind of size where one H200 allows (d 512 vs 256, 128-token windows)
    "gpu": dict(n_ctx=128, vocab_size=8000, hidden_size=512, layers=4, kernel=8, steps=1500, batch_size=64, lr=1e-3,
                warmup_steps=100, eval_windows=512, inits=["memmix", "pytorch"], bf16=True),
    "tiny": dict(n_ctx=8, vocab_size=1000, hidden_size=64, layers=1, kernel=2, steps=3, batch_size=2, lr=3e-3,
                 warmup_steps=1, eval_windows=4, inits=["memmix", "pytorch"], bf16=False),
}
INIT_NAMES = {"pytorch": "seed's init (PyTorch defaults)", "memmix": "memmix init (N(0, 0.02))"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, PRESETS)
    return parser


def variants(args) -> dict[str, dict]:
    half = args.hidden_size // 2
    return {
        f"mixer k={args.kernel}": dict(hidden_size=args.hidden_size, mixer_kernel_size=args.kernel,
                                       decoder_input="repeat"),
        "mixer flat": dict(hidden_size=args.hidden_size, decoder_input="repeat"),
        "transformer d/2": dict(hidden_size=half, encoder_type="transformer", decoder_type="transformer",
                                decoder_input="unroll", num_attention_heads=attention_heads(half)),
    }


def run_variant(args, data, seed: int, name: str, spec: dict, init: str) -> dict:
    config = MixerAutoencoderConfig(vocab_size=data.vocab_size, num_hidden_layers=args.layers, n_ctx=args.n_ctx,
                                    init_style=init, **spec)
    schedule = Schedule(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                        bf16=args.bf16, device=args.device)
    model, run, scores = train_autoencoder(config, data, schedule, seed, args.eval_windows)
    result = {**scores, "parameters": sum(p.numel() for p in model.parameters()), "seconds": run.seconds,
              "seconds_per_step": run.seconds / max(1, run.steps_done), "steps_done": run.steps_done,
              "final_train_loss": run.mean_loss(), "losses": run.losses}
    print(f"seed {seed} {init} init, {name}: CE {scores['ce']:.4f}, accuracy {scores['accuracy']:.3f}, I_e "
          f"{scores['information']:.3f}, {run.seconds:.0f} s", flush=True)
    return result


def plot(per_init: dict[str, dict[int, dict]], names: list[str], baseline: dict, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(per_init), 2, figsize=(13, 4.2 * len(per_init)), squeeze=False)
    steps = list(range(1, args.steps + 1))
    for (curves, bars), (init, per_seed) in zip(axes, per_init.items()):
        for name in names:
            plot_band(curves, steps, [smooth(per_seed[s][name]["losses"], 10) for s in per_seed], name)
        curves.axhline(baseline["ce"], color="gray", linestyle=":", label="unigram baseline (held out)")
        curves.set_xlabel("training step")
        curves.set_ylabel("training reconstruction CE (10-step mean)")
        curves.set_title(INIT_NAMES.get(init, init), fontsize=10)
        curves.legend(fontsize=8)
        labels = [*names, "seed: mixer", "seed: transformer"]
        for offset, key in ((-0.2, "information"), (0.2, "accuracy")):
            ours = [seed_stats([per_seed[s][n][key] for s in per_seed]) for n in names]
            means = [s.mean for s in ours] + [SEED_FIGURES["mixer"][key], SEED_FIGURES["transformer"][key]]
            errors = [s.std for s in ours] + [0, 0]
            bars.bar([i + offset for i in range(len(labels))], means, 0.4, yerr=errors, capsize=3,
                     label="I_e" if key == "information" else "Hamming (token) accuracy")
        bars.set_xticks(range(len(labels)), labels, fontsize=8, rotation=15)
        bars.set_ylim(0, 1)
        bars.legend(fontsize=8)
        bars.set_title(f"held-out I_e and token accuracy, {INIT_NAMES.get(init, init)} (seed's figures right)",
                       fontsize=10)
    figure.suptitle(f"F2: mixer vs transformer autoencoders at matched memory, {len(args.seeds)} seeds")
    figure.tight_layout()
    return figure


def init_effects(per_seed: dict[int, dict], names: list[str], seeds: list[int]) -> dict[str, list[float]]:
    mixer, flat, transformer = names
    effect: dict[str, list[float]] = {}
    for other in (mixer, flat):
        for key, label in (("accuracy", "token accuracy"), ("information", "I_e")):
            effect[f"{label}: {other} - {transformer}"] = [per_seed[s][other][key] - per_seed[s][transformer][key]
                                                           for s in seeds]
        effect[f"CE: {transformer} - {other}"] = [per_seed[s][transformer]["ce"] - per_seed[s][other]["ce"]
                                                  for s in seeds]
    return effect


def main(argv: list[str] | None = None) -> int:
    args = resolve_presets(build_parser().parse_args(argv), PRESETS)
    started = time.time()
    data = load_data(args.n_ctx, args.vocab_size, Path(args.work_dir))
    specs = variants(args)
    names = list(specs)
    per_init = {init: {seed: {name: run_variant(args, data, seed, name, spec, init) for name, spec in specs.items()}
                       for seed in args.seeds} for init in args.inits}
    baseline = unigram_baseline(data)
    mixer, flat, transformer = names
    n = len(args.seeds)

    rows = []
    for init, per_seed in per_init.items():
        for name in names:
            runs = [per_seed[s][name] for s in args.seeds]
            rows.append([init, name, f"{runs[0]['parameters']:,}"] + [str(seed_stats([r[k] for r in runs])) for k in
                        ("ce", "accuracy", "information", "seconds_per_step")])
    rows.append(["-", "unigram baseline (no embedding)", "-", f"{baseline['ce']:.4g}", f"{baseline['accuracy']:.4g}",
                 f"{baseline['information']:.4g}", "-"])
    for kind in ("mixer", "transformer"):
        rows.append(["-", f"seed's {kind} autoencoder (d 1024 / 512, 512 tokens)", "-", "-",
                     f"{SEED_FIGURES[kind]['accuracy']}", f"{SEED_FIGURES[kind]['information']}", "-"])
    table = markdown_table(["init", "variant", "parameters", "held-out CE", "Hamming (token) accuracy", "I_e",
                            "s / step"], rows)

    effects = {init: init_effects(per_seed, names, args.seeds) for init, per_seed in per_init.items()}
    seed_gap = {k: SEED_FIGURES["mixer"][k] - SEED_FIGURES["transformer"][k] for k in ("accuracy", "information")}
    calls, parts = {}, []
    for init, effect in effects.items():
        accuracy = effect[f"token accuracy: {mixer} - {transformer}"]
        information = effect[f"I_e: {mixer} - {transformer}"]
        flat_accuracy = effect[f"token accuracy: {flat} - {transformer}"]
        calls[init] = verdict(accuracy)
        parts.append(
            f"{INIT_NAMES.get(init, init)}: **{calls[init]} at this scale**: token accuracy {mixer} - {transformer} = "
            f"{seed_stats(accuracy)} over {n} seeds ({seed_stats(accuracy).mean / seed_gap['accuracy']:.0%} of the "
            f"seed's gap of {seed_gap['accuracy']:+.3f}); I_e {seed_stats(information)} (seed: "
            f"{seed_gap['information']:+.3f}, {verdict(information)}); the flat mixer - {transformer}: accuracy "
            f"{seed_stats(flat_accuracy)} ({verdict(flat_accuracy)})")
    verdict_text = ("mixer autoencoders beat transformer autoencoders at matched memory: " + "; ".join(parts)
                    + ".")
    best = max(seed_stats([per_seed[s][name]["accuracy"] for s in args.seeds]).mean
               for per_seed in per_init.values() for name in names)
    seed_scale = (f"the seed's figures come from d 1024 (mixer) vs 512 (transformer), 512-token windows, 8+8 layers "
                  f"and billions of tokens, where the mixer regenerates 77 % of tokens exactly; here width "
                  f"{args.hidden_size} vs {args.hidden_size // 2}, {args.n_ctx}-token windows, "
                  f"{args.layers}+{args.layers} layers and {args.steps * args.batch_size * args.n_ctx:,} training "
                  f"tokens per run (best mean accuracy {best:.3f}; unigram baseline {baseline['accuracy']:.3f})")
    if all(call == "reproduced" for call in calls.values()):
        needed = (f"Size of the effect: {seed_scale}. The direction holds under both initializations. Whether the "
                  f"gap settles at the seed's +0.38 needs longer training and longer windows, where packing a whole "
                  f"window into one position should get harder for attention; the `gpu` preset (d 512 vs 256, "
                  f"128-token windows) is that test.")
    else:
        needed = (f"Scale: {seed_scale}. The models are still near the unigram plateau, and which one leaves it "
                  f"first depends on the initialization (the unrolled input the transformer reads starts slowly "
                  f"under memmix's small init, F3); a verdict that does not hinge on that transient needs runs long "
                  f"enough for both to leave the plateau for good (thousands of steps) and longer windows, e.g. the "
                  f"`gpu` preset (d 512 vs 256, 128-token windows).")
    settings = (
        f"Built-in corpus (byte-level BPE, vocabulary {data.vocab_size}), windows of {args.n_ctx} tokens, "
        f"{data.train_ids.shape[0]} training windows, {min(args.eval_windows, data.val_ids.shape[0])} held-out "
        f"windows. {args.layers}+{args.layers} layers, no bottleneck (the embedding is the encoder's last hidden "
        f"state: {args.hidden_size} values for the mixers, {args.hidden_size // 2} for the transformer). Mixers "
        f"read the embedding repeated at every position; the transformer reads it unrolled (a transformer fed the "
        f"same vector at every position cannot tell positions apart, F3), {attention_heads(args.hidden_size // 2)} "
        f"attention heads, rotary positions. Initializations: {', '.join(args.inits)} (the Llama blocks keep "
        f"transformers' own init in both). One schedule for all, not tuned per architecture: {args.steps} steps x "
        f"{args.batch_size} windows, AdamW lr {args.lr}, warmup {args.warmup_steps} + cosine, grad clip 1, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}, device {args.device}, {args.threads} thread(s). Matched memory "
        f"as in the seed: the transformer at half the width (parameters and time per step are in the table; the "
        f"seed's argument is activation memory, about 2x for attention's K, Q, V at one width). Wall time "
        f"{time.time() - started:.0f} s."
    )
    effect_tables = [f"Effects per seed, {INIT_NAMES.get(init, init)}:\n\n{effect_table(effect)}"
                     for init, effect in effects.items()]
    body = "\n\n".join([table, *effect_tables, needed])
    results = {"args": vars(args), "unigram_baseline": baseline, "seed_figures": SEED_FIGURES,
               "effects": {f"{init}: {label}": values for init, effect in effects.items()
                           for label, values in effect.items()},
               "verdicts": calls,
               "per_init": {init: {str(s): runs for s, runs in per_seed.items()} for init, per_seed in per_init.items()}}
    write_finding(NAME, "F2: mixer vs transformer autoencoders at matched memory",
                  command_line("benchmarks/findings/f2_mixer_vs_transformer_autoencoder.py", argv), settings, body,
                  verdict_text, results, plot(per_init, names, baseline, args), Path(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
