"""The autoencoder recipe search: variants of `MixerAutoencoderConfig` trained for the same wall-clock budget on
windows at random offsets of the built-in corpus, ranked by held-out token accuracy (docs/FINDINGS.md).

The budget is time, not steps, because the issue's target is "at most 20 minutes on 2 CPU cores": a wider or
deeper variant must earn its slower steps. Every variant sees the same stream of windows (one seed)::

    python benchmarks/findings/autoencoder_sweep.py --minutes 3 --variants base wide nonc_enc
    python benchmarks/findings/autoencoder_sweep.py --list

Writes ``docs/findings/autoencoder_sweep.{md,json,png}`` (``--out`` to change), the accuracy of each variant
against wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness import FINDINGS_DIR, Schedule, autoencoder_scores, load_data, markdown_table, train_model  # noqa: E402

from modeling_memmix import MixerAutoencoder, MixerAutoencoderConfig  # noqa: E402

BASE = {"hidden_size": 256, "encoder_layers": 2, "decoder_layers": 2, "mixer_kernel_size": 8}
BASE_SCHEDULE = {"lr": 2e-3, "batch_size": 32, "warmup_steps": 100}

# name -> (config overrides, schedule overrides)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "lr_3e-3": ({}, {"lr": 3e-3}),
    "lr_5e-3": ({}, {"lr": 5e-3}),
    "lr_1e-2": ({}, {"lr": 1e-2}),
    "batch_16": ({}, {"batch_size": 16}),
    "batch_128": ({}, {"batch_size": 128}),
    "wd_0.1": ({}, {"weight_decay": 0.1}),
    "batch_128_lr_5e-3": ({}, {"batch_size": 128, "lr": 5e-3}),
    "nonc_enc": ({"encoder_causal": False}, {}),
    "nonc_both": ({"encoder_causal": False, "decoder_causal": False}, {}),
    "wide_512": ({"hidden_size": 512}, {}),
    "wide_768": ({"hidden_size": 768}, {}),
    "ff_512": ({"intermediate_size": 512}, {}),
    "ff_1024": ({"intermediate_size": 1024}, {}),
    "deep_4_4": ({"encoder_layers": 4, "decoder_layers": 4}, {}),
    "enc_4_dec_2": ({"encoder_layers": 4}, {}),
    "k_16": ({"mixer_kernel_size": 16}, {}),
    "k_4": ({"mixer_kernel_size": 4}, {}),
    "k_32": ({"mixer_kernel_size": 32}, {}),
    "k_64": ({"mixer_kernel_size": 64}, {}),
    "k_128": ({"mixer_kernel_size": 128}, {}),
    "heads_4_k_8": ({"mixer_heads": 4}, {}),
    "heads_8_k_1": ({"mixer_heads": 8, "mixer_kernel_size": 1}, {}),
    "unroll": ({"decoder_input": "unroll"}, {}),
    "flat": ({"mixer_kernel_size": 1}, {}),
    "heads_4_k_1": ({"mixer_heads": 4, "mixer_kernel_size": 1}, {}),
    # the seed's comparison at matched memory: Llama blocks at half the width, unrolled decoder input
    "transformer_half": ({"encoder_type": "transformer", "decoder_type": "transformer", "decoder_input": "unroll",
                          "hidden_size": 128, "num_attention_heads": 4}, {}),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["base"], help="names from --list")
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget of each variant")
    parser.add_argument("--n-ctx", "--n_ctx", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-seconds", "--eval_seconds", type=float, default=30.0,
                        help="held-out evaluation every so many seconds")
    parser.add_argument("--eval-windows", "--eval_windows", type=int, default=512)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for every variant (JSON values), e.g. embedding_dim=128")
    parser.add_argument("--out", default=str(FINDINGS_DIR / "autoencoder_sweep"))
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--replot", action="store_true", help="rewrite the table and plot from --out's JSON")
    return parser


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --set expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def shifted_windows(stream: torch.Tensor, n_ctx: int, seed: int):
    """make_batch for `train_model`: each drawn window is replaced by the window at a random offset after it."""
    generator = torch.Generator().manual_seed(seed + 7)
    last_start = stream.numel() - n_ctx

    def make_batch(ids: torch.Tensor) -> dict:
        starts = torch.randint(0, last_start + 1, (ids.shape[0],), generator=generator)
        windows = stream[starts[:, None] + torch.arange(n_ctx)]
        return {"input_ids": windows, "labels": windows}

    return make_batch


def variant_settings(name: str) -> tuple[dict, dict]:
    """Config and schedule overrides of ``name``: one of `VARIANTS`, or several joined by ``+`` (later win)."""
    config, schedule = {}, {}
    for part in name.split("+"):
        if part not in VARIANTS:
            raise SystemExit(f"error: unknown variant {part!r}; choose from {sorted(VARIANTS)} (join with '+')")
        config.update(VARIANTS[part][0])
        schedule.update(VARIANTS[part][1])
    return config, schedule


def planned_steps(config: MixerAutoencoderConfig, schedule_settings: dict, args, data) -> tuple[int, int]:
    """(steps, evaluate every so many steps) that fill ``args.minutes`` of wall clock.

    The cosine schedule needs a step count. A short timed probe measures the steady step time (the mean gap
    between steps in the probe's second half, so start-up costs do not count) and one held-out evaluation; the
    budget less the evaluations, divided by the step time, is the plan."""
    torch.manual_seed(args.seed)
    model = MixerAutoencoder(config)
    stamps: list[float] = []
    windows = shifted_windows(data.train_ids.flatten(), args.n_ctx, args.seed)

    def timed_batch(ids: torch.Tensor) -> dict:
        stamps.append(time.perf_counter())
        return windows(ids)

    # long enough to get past start-up (a 6-second probe of a 0.15 s step measured 0.29 s): 1/40 of the budget
    probe_minutes = min(max(args.minutes / 40, 0.1), 0.5, args.minutes / 5)
    probe = Schedule(steps=10**6, bf16=True, max_minutes=probe_minutes,
                     **{**schedule_settings, "warmup_steps": 1})
    train_model(model, data.train_ids, probe, args.seed, make_batch=timed_batch)
    steady = stamps[len(stamps) // 2 :]
    seconds_per_step = ((steady[-1] - steady[0]) / (len(steady) - 1) if len(steady) > 1
                        else 60 * probe.max_minutes / max(len(stamps), 1))
    started = time.perf_counter()
    autoencoder_scores(model.eval(), data.val_ids[: args.eval_windows])
    eval_seconds = time.perf_counter() - started
    evaluations = 60 * args.minutes / args.eval_seconds
    budget = max(60 * args.minutes - evaluations * eval_seconds, 60 * args.minutes / 2)
    steps = max(int(budget / seconds_per_step), schedule_settings["warmup_steps"] + 1)
    return steps, max(int(args.eval_seconds / seconds_per_step), 1)


def run_variant(name: str, args, data, extra: dict) -> dict:
    config_overrides, schedule_overrides = variant_settings(name)
    settings = {**BASE, **config_overrides, **extra}
    config = MixerAutoencoderConfig(vocab_size=data.vocab_size, n_ctx=args.n_ctx, **settings)
    schedule_settings = {**BASE_SCHEDULE, **schedule_overrides}
    steps, eval_every = planned_steps(config, schedule_settings, args, data)
    torch.manual_seed(args.seed)
    model = MixerAutoencoder(config)
    curve: list[tuple[float, int, float]] = []
    started = time.time()

    def evaluate(model) -> dict:
        scores = autoencoder_scores(model, data.val_ids[: args.eval_windows])
        curve.append((time.time() - started, len(curve), scores["accuracy"]))
        return scores

    schedule = Schedule(steps=steps, bf16=True, max_minutes=args.minutes * 1.15,
                        eval_every=eval_every, **schedule_settings)
    run = train_model(model, data.train_ids, schedule, args.seed,
                      make_batch=shifted_windows(data.train_ids.flatten(), args.n_ctx, args.seed), evaluate=evaluate)
    final = run.evals[-1][1]
    result = {"variant": name, "config": settings, "schedule": schedule_settings, "steps": run.steps_done,
              "planned_steps": steps, "seconds": run.seconds, "accuracy": final["accuracy"], "ce": final["ce"],
              "train_loss": run.mean_loss(), "curve": [(t, a) for t, _, a in curve],
              "parameters": sum(p.numel() for p in model.parameters())}
    print(f"{name}: accuracy {final['accuracy']:.4f} CE {final['ce']:.3f} after {run.steps_done} steps "
          f"({run.seconds:.0f} s)", flush=True)
    return result


def write_outputs(results: list[dict], args) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else []
    merged = {(r["variant"], args.n_ctx if "n_ctx" not in r else r["n_ctx"]): r for r in previous}
    for result in results:
        result["n_ctx"] = args.n_ctx
        result["minutes"] = args.minutes
        merged[(result["variant"], args.n_ctx)] = result
    write_tables(sorted(merged.values(), key=lambda r: (r["n_ctx"], -r["accuracy"])), out)


def write_tables(rows: list[dict], out: Path) -> None:
    """The JSON of every run, the Markdown table and the plot at ``out`` (.json, .md, .png)."""
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    table = markdown_table(
        ["n_ctx", "variant", "minutes", "seconds run", "steps", "held-out accuracy", "held-out CE", "train loss",
         "parameters"],
        [[r["n_ctx"], r["variant"], r["minutes"], round(r["seconds"]), r["steps"], f"{r['accuracy']:.4f}",
          f"{r['ce']:.3f}", f"{r['train_loss']:.3f}", r["parameters"]] for r in rows])
    out.with_suffix(".md").write_text("# Autoencoder recipe sweep\n\nCommand: `python benchmarks/findings/"
                                      "autoencoder_sweep.py` (see its docstring); one seed, equal wall-clock "
                                      "budget per variant, bf16 autocast, windows at random offsets, cosine "
                                      "schedule sized to the budget.\n\n" + table + "\n\n" + variant_legend() + "\n")
    plot_curves(rows, out.with_suffix(".png"))


def variant_legend() -> str:
    lines = [f"- `base`: config {BASE}, schedule {BASE_SCHEDULE}; the others change (join with `+`):"]
    lines += [f"  - `{name}`: {config or ''} {schedule or ''}".rstrip() for name, (config, schedule) in VARIANTS.items()
              if name != "base"]
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Held-out accuracy against wall-clock time, one panel per window length, best variants first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["n_ctx"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(6.5 * len(lengths), 4.5), squeeze=False)
    for ax, n_ctx in zip(axes[0], lengths):
        for r in (r for r in rows if r["n_ctx"] == n_ctx and r["curve"]):
            ts, accs = zip(*r["curve"])
            ax.plot([t / 60 for t in ts], accs, label=f"{r['variant']} ({r['accuracy']:.2f})")
        ax.set_xlabel("wall-clock minutes (2 CPU cores)")
        ax.set_ylabel("held-out token accuracy")
        ax.set_title(f"autoencoder variants, {n_ctx}-token windows")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, (config, schedule) in VARIANTS.items():
            print(f"{name}: config {config} schedule {schedule}")
        return 0
    if args.replot:
        write_tables(json.loads(Path(args.out).with_suffix(".json").read_text()), Path(args.out))
        return 0
    for name in args.variants:
        variant_settings(name)  # unknown names fail before any training
    data = load_data(args.n_ctx)
    extra = parse_overrides(args.set)
    results = [run_variant(name, args, data, extra) for name in args.variants]
    write_outputs(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
