"""Is the 128-token autoencoder short of steps? Regeneration by train_accelerate.py runs of one recipe on one corpus
that differ only in the length of their schedule (``train.max_steps``, with ``train.max_minutes`` large enough not to
cut it), scored on one held-out set, as a table and a PNG against training steps::

    python train_accelerate.py --preset configuration/autoencoder_128.json \\
        --set data.tokenizer=runs/autoencoder_128/tokenizer \\
        --set 'data.corpus=["builtin", "runs/corpora/package_docstrings.jsonl"]' \\
        --set train.max_steps=7000 --set train.max_minutes=60 --set train.output_dir=runs/autoencoder_128_packages_7000
    python benchmarks/findings/autoencoder_step_scaling.py runs/autoencoder_128_packages \\
        runs/autoencoder_128_packages_7000 --held_out builtin --out docs/findings/autoencoder_128_step_scaling

The corpus must be large enough that no schedule repeats it much (the data-scaling runs,
`autoencoder_data_scaling.py`, show what repetition does); every run must train on the same text with the same
tokenizer. Runs of the same schedule (several seeds) are pooled into a mean and spread. Held-out accuracy is fitted
against log2(steps run) over every run, and over the two longest schedules alone (does the curve flatten?). The
verdict: 'step-limited' when the last doubling of the steps bought more than twice the seed spread. The line's
crossing of a target is printed as an extrapolation in steps and in hours at the runs' own speed, never as a
measurement. Each run's training log (its own held-out windows, the same for every run) is drawn against step.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accuracy_curves import read_evaluations  # noqa: E402
from autoencoder_data_scaling import corpus_label, held_out_windows, run_config, score_run  # noqa: E402
from harness import markdown_table, seed_stats  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="autoencoder run folders of train_accelerate.py on one corpus "
                        "(run_config.json, metrics.jsonl, export/)")
    parser.add_argument("--held_out", nargs="+", default=None,
                        help="corpus whose validation windows score every run, split and tokenized as the runs' "
                             "(default: the runs' own corpus); 'builtin' compares with every other 128-token number")
    parser.add_argument("--seen_windows", type=int, default=147,
                        help="training windows scored per run, spread evenly over its training text")
    parser.add_argument("--target", type=float, default=0.5, help="held-out accuracy the extrapolation aims at")
    parser.add_argument("--out", required=True, help="output path without suffix (.md, .json and .png are written)")
    return parser


def check_same_text(runs: list[Path]) -> None:
    """Every run trains on the first run's corpus, share and tokenizer settings, else the steps are not the only
    difference."""
    first = run_config(runs[0]).data
    for run in runs[1:]:
        data = run_config(run).data
        if (data.corpus, data.train_fraction, data.tokenizer, data.vocab_size) != (
                first.corpus, first.train_fraction, first.tokenizer, first.vocab_size):
            raise SystemExit(f"error: {run} trains on other text than {runs[0]} (corpus {data.corpus!r}, share "
                             f"{data.train_fraction}, tokenizer {data.tokenizer!r}); step scaling holds the data fixed")


def training_speed(run: Path) -> float:
    """Steps per second of the run's training loop (its last logged step over the elapsed seconds)."""
    steps_and_seconds = read_evaluations(run, "elapsed_s")
    step, seconds = steps_and_seconds[-1]
    return step / seconds


def score(run: Path, held_out, tokenizer_id: str, seen_windows: int) -> dict:
    """`score_run`'s numbers, the run's scheduled steps and speed, and its training log's held-out accuracy."""
    row = score_run(run, held_out, tokenizer_id, seen_windows)
    row["max_steps"] = run_config(run).train.max_steps
    row["steps_per_second"] = training_speed(run)
    row["log"] = dict(read_evaluations(run, "val_token_accuracy"))
    return row


def pool_by_schedule(rows: list[dict]) -> list[dict]:
    """One entry per scheduled length, shortest first: mean and spread of each score over its runs (seeds)."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["max_steps"]].append(row)
    pooled = []
    for max_steps in sorted(groups):
        group = groups[max_steps]
        entry = {"max_steps": max_steps, "runs": len(group), "seeds": [row["seed"] for row in group]}
        for measure in ("steps", "held_out_accuracy", "held_out_ce", "seen_accuracy", "seen_ce", "steps_per_second"):
            stats = seed_stats([row[measure] for row in group])
            entry[measure], entry[f"{measure}_std"] = stats.mean, stats.std
        pooled.append(entry)
    return pooled


def fit_per_doubling(rows: list[dict]) -> tuple[float, float]:
    """Least-squares line ``held_out_accuracy = intercept + slope * log2(steps)``: (slope, intercept)."""
    xs = [math.log2(row["steps"]) for row in rows]
    if len(set(xs)) < 2:
        raise SystemExit("error: the runs have one schedule length; a slope needs at least two")
    line = statistics.linear_regression(xs, [row["held_out_accuracy"] for row in rows])
    return line.slope, line.intercept


def step_verdict(slope: float, spread: float) -> str:
    """'step-limited' when a doubling of the steps buys more than twice the seed spread, 'not step-limited' when it
    buys less than the spread, otherwise 'inconclusive'."""
    if spread == 0.0:
        return "inconclusive (no schedule has two seeds, so no spread to weigh the slope against)"
    if slope > 2 * spread:
        return "step-limited"
    if abs(slope) < spread:
        return "not step-limited"
    return "inconclusive"


def crossing_steps(slope: float, intercept: float, target: float) -> float | None:
    """Steps where the fitted line reaches ``target`` (None when the line does not rise)."""
    return 2 ** ((target - intercept) / slope) if slope > 0 else None


def plot(pooled: list[dict], rows: list[dict], line: tuple[float, float], title: str, path: Path) -> None:
    """Final held-out accuracy against steps (the last doubling's line, extended to twice the longest schedule) and
    every run's logged held-out accuracy against step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (final_axis, log_axis) = plt.subplots(1, 2, figsize=(11, 4))
    final_axis.errorbar([e["steps"] for e in pooled], [e["held_out_accuracy"] for e in pooled],
                        yerr=[e["held_out_accuracy_std"] for e in pooled], fmt="o", capsize=3, label="held-out windows")
    final_axis.errorbar([e["steps"] for e in pooled], [e["seen_accuracy"] for e in pooled],
                        yerr=[e["seen_accuracy_std"] for e in pooled], fmt="s", capsize=3, label="seen windows")
    slope, intercept = line
    xs = [pooled[-2]["steps"], 2 * pooled[-1]["steps"]]
    final_axis.plot(xs, [intercept + slope * math.log2(x) for x in xs], ":", color="black",
                    label=f"last doubling, extended: {100 * slope:+.1f} points per doubling")
    final_axis.set_xscale("log", base=2)
    final_axis.set_xlabel("training steps (each run's whole cosine schedule)")
    final_axis.set_ylabel("token accuracy at the end")
    for row in rows:
        steps, values = zip(*sorted(row["log"].items()))
        log_axis.plot(steps, values, marker=".", label=f"{row['max_steps']} steps, seed {row['seed']}")
    log_axis.set_xlabel("step")
    log_axis.set_ylabel("held-out token accuracy (training log)")
    for axis in (final_axis, log_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.savefig(path, dpi=110, bbox_inches="tight")


def table_rows(pooled: list[dict], rows: list[dict]) -> list[list]:
    def logged(entry: dict) -> str:
        finals = [row["log"][max(row["log"])] for row in rows if row["max_steps"] == entry["max_steps"]]
        return f"{100 * sum(finals) / len(finals):.1f} %"

    return [[e["max_steps"], f"{e['runs']} ({', '.join(map(str, e['seeds']))})", f"{e['steps']:.0f}",
             f"{100 * e['held_out_accuracy']:.1f} ± {100 * e['held_out_accuracy_std']:.1f} %",
             f"{e['held_out_ce']:.2f} ± {e['held_out_ce_std']:.2f}", f"{100 * e['seen_accuracy']:.1f} %",
             f"{e['seen_ce']:.2f}", logged(e), f"{e['steps_per_second']:.2f}"] for e in pooled]


def summarize(pooled: list[dict], rows: list[dict], held_out, args) -> dict:
    """The fits, the verdict and the extrapolation, as numbers and as one paragraph (``text``)."""
    overall_slope, _ = fit_per_doubling(rows)
    longest = sorted({row["max_steps"] for row in rows})[-2:]
    slope, intercept = fit_per_doubling([row for row in rows if row["max_steps"] in longest])
    spread = max((entry["held_out_accuracy_std"] for entry in pooled if entry["runs"] > 1), default=0.0)
    call = step_verdict(slope, spread)
    crossing = crossing_steps(slope, intercept, args.target)
    text = (f"{len(held_out)} held-out windows of {held_out.window} tokens for every run. Held-out accuracy against "
            f"log2(steps): {100 * overall_slope:+.2f} points per doubling over every run, {100 * slope:+.2f} over "
            f"the last doubling ({longest[0]} → {longest[-1]} scheduled steps; largest seed spread "
            f"{100 * spread:.2f} points): **{call}**.")
    speed = sum(row["steps_per_second"] for row in rows) / len(rows)
    if crossing is not None:
        text += (f" Extrapolated, not measured: the last doubling's line reaches {100 * args.target:.0f} % at about "
                 f"{crossing:,.0f} steps of batch 32, {math.log2(crossing / pooled[-1]['steps']):.1f} more doublings "
                 f"of the longest schedule: {crossing / speed / 3600:.1f} hours at these runs' mean "
                 f"{speed:.2f} steps/s on 2 cores, if the line stayed straight and the text stayed unrepeated.")
    return {"overall_slope_per_doubling": overall_slope, "last_doubling_slope": slope, "intercept": intercept,
            "seed_spread": spread, "verdict": call, "target_crossing_steps": crossing,
            "mean_steps_per_second": speed, "text": text}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = [Path(run) for run in dict.fromkeys(args.runs)]
    check_same_text(runs)
    corpus = None if args.held_out is None else (args.held_out[0] if len(args.held_out) == 1 else args.held_out)
    held_out, tokenizer_id = held_out_windows(runs[0], corpus)
    rows = [score(run, held_out, tokenizer_id, args.seen_windows) for run in runs]
    pooled = pool_by_schedule(rows)
    summary = summarize(pooled, rows, held_out, args)
    table = markdown_table(
        ["scheduled steps", "runs (seeds)", "steps run", "held-out accuracy", "held-out CE", "seen-window accuracy",
         "seen-window CE", "own held-out accuracy at the end (training log)", "steps/s"],
        table_rows(pooled, rows))
    text_label = corpus_label({"corpus": rows[0]["corpus"], "train_fraction": rows[0]["train_fraction"]})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(pooled, rows, (summary["last_doubling_slope"], summary["intercept"]),
         f"{held_out.window}-token autoencoder on {text_label}: longer schedules (mean ± std over seeds)",
         out.with_suffix(".png"))
    command = "python benchmarks/findings/autoencoder_step_scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([f"# {out.name}", "", f"Command: `{command}`", "", f"Training text: {text_label}.", "", table, "",
                      summary["text"], "", f"![{out.name}]({out.name}.png)", ""])
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"runs": rows, "schedules": pooled, **summary}, indent=1),
                                        encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
