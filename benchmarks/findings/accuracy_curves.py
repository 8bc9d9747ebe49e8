"""Held-out token accuracy (or loss) against training step for autoencoder runs of train_accelerate.py, read from
their ``metrics.jsonl`` files, as one PNG and a Markdown table (the recipe's learning curves in docs/FINDINGS.md)::

    python benchmarks/findings/accuracy_curves.py runs/autoencoder_32 runs/autoencoder_32_unroll \\
        --labels "k=8, repeat" "k=8, unroll" --out docs/findings/autoencoder_recipe
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (holding metrics.jsonl) or metrics.jsonl files")
    parser.add_argument("--labels", nargs="+", default=None, help="one label per run (default: folder names)")
    parser.add_argument("--measure", default="val_token_accuracy", choices=("val_token_accuracy", "val_loss"))
    parser.add_argument("--out", required=True, help="output path without suffix (.png and .md are written)")
    return parser


def read_evaluations(run: str, measure: str) -> list[tuple[int, float]]:
    """(step, value) of every evaluation record of ``run`` that holds ``measure``."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    points = [(r["step"], r[measure]) for r in records if measure in r]
    if not points:
        raise SystemExit(f"error: {path} has no {measure!r} records")
    return points


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    labels = args.labels or [Path(run).name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"error: {len(labels)} labels for {len(args.runs)} runs")
    curves = {label: read_evaluations(run, args.measure) for label, run in zip(labels, args.runs)}

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        axis.plot(*zip(*points), marker="o", label=label)
    axis.set_xlabel("training step")
    axis.set_ylabel("held-out token accuracy" if args.measure == "val_token_accuracy" else "held-out loss (nats/token)")
    axis.grid(alpha=0.3)
    axis.legend()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out.with_suffix(".png"), dpi=110, bbox_inches="tight")
    steps = sorted({step for points in curves.values() for step, _ in points})
    lines = ["| step | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
    for step in steps:
        values = [dict(points).get(step) for points in curves.values()]
        lines.append(f"| {step} | " + " | ".join("" if v is None else f"{v:.4f}" for v in values) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
