"""Autoencoder accuracy against window length: how much of a held-out window of the built-in corpus each kind of
autoencoder regenerates exactly from its one embedding, at the same wall-clock budget per run (docs/FINDINGS.md).

Variants (the recipe's other settings unchanged: width 256, 2+2 layers, lr 2e-3, batch 32, warmup 100 + cosine
sized to the budget, bf16 autocast, windows at random offsets -- `autoencoder_sweep.py`'s training):

- ``flat``: one ``n_ctx x n_ctx`` mixing matrix per layer (``mixer_kernel_size=1``, no heads);
- ``heads``: 4 mixer heads, ``mixer_kernel_size=1``;
- ``kernel``: the recipe, ``mixer_kernel_size=64``;
- ``transformer``: Llama blocks at half the width (the seed's comparison at matched memory), unrolled input.

Each (window, variant) run is written to the JSON as soon as it finishes, so an interrupted sweep keeps what it
measured and ``--resume`` skips what is there. Writes ``docs/findings/autoencoder_windows.{md,json,png}``::

    python benchmarks/findings/autoencoder_windows.py --minutes 4           # 8..128 tokens, 4 variants (~90 min)
    python benchmarks/findings/autoencoder_windows.py --minutes 20          # the issue's budget (~7 hours)
    python benchmarks/findings/autoencoder_windows.py --windows 64 --variants kernel --minutes 4 --resume
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from autoencoder_sweep import run_variant  # noqa: E402
from harness import FINDINGS_DIR, load_data, markdown_table  # noqa: E402

# our name -> the sweep's variant
VARIANTS = {"flat": "flat", "heads": "heads_4_k_1", "kernel": "k_64", "transformer": "transformer_half"}
# the kernel recipe's own 20-minute runs (configuration/autoencoder_32.json; at 128 tokens the same model, width 256
# and k = 64, at batch 16, which autoencoder_128.json shipped before its width-512 recipe), drawn beside the sweep
RECIPE_RUNS = {32: "autoencoder_32.jsonl", 128: "autoencoder_128_k64.jsonl"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--minutes", type=float, default=4.0, help="wall-clock budget of each run")
    parser.add_argument("--hidden_size", type=int, default=256, help="mixer width; the transformer gets half")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval_seconds", type=float, default=30.0,
                        help="held-out evaluation every so many seconds")
    parser.add_argument("--eval_windows", type=int, default=512)
    parser.add_argument("--resume", action="store_true", help="keep runs already in the JSON and skip them")
    parser.add_argument("--replot", action="store_true", help="rewrite the table and plot from the JSON")
    parser.add_argument("--out", default=str(FINDINGS_DIR / "autoencoder_windows"))
    return parser


def run_window(variant: str, n_ctx: int, data, args: argparse.Namespace) -> dict:
    """One training run of ``variant`` on ``n_ctx``-token windows, for ``args.minutes`` of wall clock."""
    sweep_args = argparse.Namespace(n_ctx=n_ctx, minutes=args.minutes, seed=args.seed,
                                    eval_seconds=args.eval_seconds, eval_windows=args.eval_windows)
    width = args.hidden_size // 2 if variant == "transformer" else args.hidden_size
    result = run_variant(VARIANTS[variant], sweep_args, data, {"hidden_size": width})
    return {**result, "variant": variant, "n_ctx": n_ctx, "minutes": args.minutes, "seed": args.seed}


def long_run_points(metrics_dir: Path) -> dict[str, dict[int, tuple[float, float]]]:
    """variant -> window -> (minutes, held-out accuracy) at the end of the long runs: the recipe's own (kernel,
    where its metrics are kept) and every run in ``autoencoder_windows_20min.json`` (``--minutes 20``)."""
    points: dict[str, dict[int, tuple[float, float]]] = {}
    for n_ctx, name in RECIPE_RUNS.items():
        path = metrics_dir / name
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        evals = [r for r in rows if "val_token_accuracy" in r]
        seconds = [r["elapsed_s"] for r in rows if "elapsed_s" in r]
        if evals and seconds:
            points.setdefault("kernel", {})[n_ctx] = (seconds[-1] / 60, evals[-1]["val_token_accuracy"])
    long_runs = metrics_dir.parent / "autoencoder_windows_20min.json"
    if long_runs.exists():
        for row in json.loads(long_runs.read_text(encoding="utf-8")):
            points.setdefault(row["variant"], {}).setdefault(row["n_ctx"], (row["seconds"] / 60, row["accuracy"]))
    return {variant: dict(sorted(by_window.items())) for variant, by_window in points.items()}


def write_outputs(rows: list[dict], args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: (r["n_ctx"], list(VARIANTS).index(r["variant"])))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    table = markdown_table(
        ["window", "variant", "seed", "minutes", "seconds run", "steps", "held-out accuracy", "held-out CE",
         "train loss", "parameters"],
        [[r["n_ctx"], r["variant"], r.get("seed", 0), r["minutes"], round(r["seconds"]), r["steps"],
          f"{r['accuracy']:.4f}", f"{r['ce']:.3f}", f"{r['train_loss']:.3f}", r["parameters"]] for r in rows])
    stars = other_long_runs(rows, long_run_points(out.parent / "run_metrics"))
    verdict = best_per_window(rows, stars)
    starred = "; ".join(f"{variant} at {n} tokens: {accuracy:.1%} after {minutes:.0f} min"
                        for variant, by_window in stars.items() for n, (minutes, accuracy) in by_window.items())
    out.with_suffix(".md").write_text(
        f"# Autoencoder token accuracy against window length\n\nCommand: `{rerun_command(rows, out)}` (see its "
        "docstring); the same wall-clock budget per run on 2 CPU cores, the recipe's training (windows at random "
        "offsets, cosine sized to the budget, bf16 autocast).\n\n"
        f"{table}\n\n**Best variant per window:** {verdict}.\n\n"
        + (f"Long runs drawn as stars, not rows of this table: {starred}.\n\n" if starred else "")
        + f"![{out.name}]({out.name}.png)\n", encoding="utf-8")
    plot(rows, stars, out.with_suffix(".png"))


def best_per_window(rows: list[dict], stars: dict[str, dict[int, tuple[float, float]]]) -> str:
    """The most accurate run at each window of ``rows``, counting the starred long runs (marked as such) whose
    budget is comparable: at least 3/4 of the window's longest row budget and at most 1/4 over it."""
    candidates: dict[int, list[tuple[float, str]]] = {}
    budget: dict[int, float] = {}
    for r in rows:
        candidates.setdefault(r["n_ctx"], []).append((r["accuracy"], f"`{r['variant']}`"))
        budget[r["n_ctx"]] = max(budget.get(r["n_ctx"], 0.0), r["minutes"])
    for variant, by_window in stars.items():
        for n, (minutes, accuracy) in by_window.items():
            if n in candidates and 0.75 * budget[n] <= minutes <= 1.25 * budget[n]:
                candidates[n].append((accuracy, f"`{variant}` (starred run, {minutes:.0f} min)"))
    best = {n: max(candidates[n]) for n in sorted(candidates)}
    return "; ".join(f"{n} tokens: {label} {accuracy:.1%}" for n, (accuracy, label) in best.items())


def other_long_runs(rows: list[dict], long_runs: dict[str, dict[int, tuple[float, float]]]
                    ) -> dict[str, dict[int, tuple[float, float]]]:
    """The long runs that are not ``rows`` themselves (a run is its variant, window and seconds run)."""
    own = {(r["variant"], r["n_ctx"], round(r["seconds"])) for r in rows}
    others = {variant: {n: (m, a) for n, (m, a) in by_window.items() if (variant, n, round(m * 60)) not in own}
              for variant, by_window in long_runs.items()}
    return {variant: by_window for variant, by_window in others.items() if by_window}


def rerun_command(rows: list[dict], out: Path) -> str:
    """The command lines that measure ``rows`` again (their budgets, seeds, windows and variants).

    A sparse grid (variants run at different windows) gets one command per set of windows, the later ones with
    ``--resume``, so that rerunning trains exactly the runs of the table and no others.
    """
    def values(key: str, subset: list[dict]) -> str:
        present = sorted({r.get(key, 0) for r in subset})
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in present)

    out = Path(out).resolve()
    windows_of = {v: tuple(sorted({r["n_ctx"] for r in rows if r["variant"] == v})) for v in VARIANTS}
    groups: dict[tuple[int, ...], list[str]] = {}
    for variant, windows in windows_of.items():
        if windows:
            groups.setdefault(windows, []).append(variant)
    commands = []
    for index, (windows, variants) in enumerate(groups.items()):
        subset = [r for r in rows if r["variant"] in variants]
        parts = [f"--minutes {values('minutes', subset)}", f"--seed {values('seed', subset)}",
                 f"--windows {' '.join(map(str, windows))}"]
        if variants != list(VARIANTS):
            parts.append(f"--variants {' '.join(variants)}")
        if out != FINDINGS_DIR / "autoencoder_windows":
            parts.append(f"--out {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        if index:
            parts.append("--resume")
        commands.append("python benchmarks/findings/autoencoder_windows.py " + " ".join(parts))
    return " && ".join(commands)


def plot(rows: list[dict], long_runs: dict[str, dict[int, tuple[float, float]]], path: Path) -> None:
    """Top: final accuracy against window length per variant, ``long_runs`` as stars. Below: accuracy against
    time, one panel a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["n_ctx"] for r in rows})
    figure = plt.figure(figsize=(max(3.2 * len(lengths), 9), 8))
    grid = figure.add_gridspec(2, len(lengths), height_ratios=[1.3, 1])
    top = figure.add_subplot(grid[0, :])
    colors = {variant: f"C{index}" for index, variant in enumerate(VARIANTS)}
    for variant, color in colors.items():
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["n_ctx"])
        if mine:
            top.plot([r["n_ctx"] for r in mine], [r["accuracy"] for r in mine], marker="o", color=color,
                     label=variant)
    for variant, by_window in long_runs.items():
        top.scatter(list(by_window), [a for _, a in by_window.values()], marker="*", s=160, color=colors[variant],
                    edgecolor="black", linewidth=0.5, zorder=5, label=f"{variant}, long runs (" + ", ".join(
                        f"{n}: {m:.0f} min" for n, (m, _) in by_window.items()) + ")")
    top.set_xscale("log", base=2)
    top.set_xticks(lengths, [str(n) for n in lengths])
    top.set_xlabel("window length (tokens)")
    top.set_ylabel("held-out token accuracy")
    top.set_ylim(0, 1.02)
    minutes = ", ".join(f"{m:g}" for m in sorted({r["minutes"] for r in rows}))
    top.set_title(f"autoencoder regeneration after {minutes} min of training per run (2 CPU cores, one seed)")
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    for column, n_ctx in enumerate(lengths):
        axis = figure.add_subplot(grid[1, column], sharey=top if column == 0 else None)
        for r in (r for r in rows if r["n_ctx"] == n_ctx and r["curve"]):
            ts, accs = zip(*r["curve"])
            axis.plot([t / 60 for t in ts], accs, color=colors[r["variant"]])
        axis.set_title(f"{n_ctx} tokens", fontsize=9)
        axis.set_xlabel("minutes")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        if column == 0:
            axis.set_ylabel("accuracy while training")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_path = Path(args.out).with_suffix(".json")
    if args.replot:
        write_outputs(json.loads(json_path.read_text(encoding="utf-8")), args)
        return 0
    kept = json.loads(json_path.read_text(encoding="utf-8")) if args.resume and json_path.exists() else []
    done = {(r["variant"], r["n_ctx"]) for r in kept}
    rows = list(kept)
    for n_ctx in args.windows:
        todo = [v for v in args.variants if (v, n_ctx) not in done]
        if not todo:
            continue
        data = load_data(n_ctx)
        for variant in todo:
            rows.append(run_window(variant, n_ctx, data, args))
            write_outputs(rows, args)  # after every run: an interrupted sweep keeps what it measured
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
