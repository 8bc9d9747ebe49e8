"""Is the 128-token autoencoder short of data? Regeneration by train_accelerate.py runs trained on nested shares of
the training documents (``data.train_fraction``), or on a larger corpus (``benchmarks/findings/docstring_corpus.py``),
all with one tokenizer, scored on one held-out set (the first run's validation windows) and on windows of the text
each run trained on, as a table and a PNG against training tokens::

    python train_accelerate.py --preset configuration/autoencoder_128.json --set data.train_fraction=0.25 \\
        --set data.tokenizer=runs/autoencoder_128/tokenizer --set train.output_dir=runs/autoencoder_128_data025
    python benchmarks/findings/autoencoder_data_scaling.py runs/autoencoder_128 runs/autoencoder_128_seed1 \\
        runs/autoencoder_128_data025 --out docs/findings/autoencoder_128_data_scaling

Runs of the same corpus and share (several seeds) are pooled into a mean and spread. The verdict is read from the
slope of held-out accuracy against log2(training tokens) over the last doubling of the first run's corpus (its two
largest shares): if that doubling bought more than twice the seed spread, the budget is spent on too little text.
The slope over all shares is printed too (a curve that flattens has a steep overall slope and a flat last one).
A larger corpus tests the last doubling's line (its prediction is printed beside the measurement); the line's
crossing of a target is printed as an extrapolation, never as a measurement. Each run's best held-out accuracy in
its training log, and where it fell, shows when a small share starts to be learned by heart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accuracy_curves import read_evaluations  # noqa: E402
from harness import autoencoder_scores, markdown_table, seed_stats  # noqa: E402

from memmix_data import tokenizer_fingerprint  # noqa: E402
from memmix_train.config import RunConfig  # noqa: E402
from memmix_train.data import build_windows  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="autoencoder run folders of train_accelerate.py (run_config.json, "
                        "metrics.jsonl, export/)")
    parser.add_argument("--seen_windows", type=int, default=147,
                        help="training windows scored per run, spread evenly over its training text")
    parser.add_argument("--target", type=float, default=0.5, help="held-out accuracy the extrapolation aims at")
    parser.add_argument("--out", required=True, help="output path without suffix (.md, .json and .png are written)")
    return parser


def run_config(run: Path) -> RunConfig:
    """The run's saved settings, defaults filled (runs older than a setting get its default)."""
    path = run / "run_config.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist (is {run} a train_accelerate.py run folder?)")
    return RunConfig.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))


def run_windows(config: RunConfig, tokenizer, split: str):
    """The packed windows of one side of the corpus exactly as the run built them (its share of the training
    documents for ``split="train"``)."""
    return build_windows(config.data, tokenizer, config.model["n_ctx"], split)


def evenly_spread(ids: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` rows of ``ids`` spread evenly from the first to the last (all rows when there are fewer)."""
    if ids.shape[0] <= count:
        return ids
    return ids[torch.linspace(0, ids.shape[0] - 1, count).round().long()]


def held_out_windows(run: Path, corpus: str | list[str] | None = None):
    """The validation windows of ``run`` (scored for every run, so all are judged on one held-out set), or of
    ``corpus`` split and tokenized as ``run`` would, and the fingerprint of the tokenizer they were cut with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "export")
    config = run_config(run)
    if corpus is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, corpus=corpus))
    return run_windows(config, tokenizer, "validation"), tokenizer_fingerprint(tokenizer)


def score_run(run: Path, held_out, tokenizer_id: str, seen_windows: int) -> dict:
    """Training share, tokens, steps and regeneration of ``held_out`` and of the run's own training windows by the
    run's exported model. ``own_held_out`` tells whether the run's validation windows are ``held_out``; then
    ``logged_accuracy`` holds its training log's held-out accuracy by step (comparable too), else it is empty."""
    from transformers import AutoTokenizer

    from modeling_memmix import MixerAutoencoder

    export = run / "export"
    if not (export / "config.json").is_file():
        raise SystemExit(f"error: {export} holds no exported model (did the run finish?)")
    tokenizer = AutoTokenizer.from_pretrained(export)
    if tokenizer_fingerprint(tokenizer) != tokenizer_id:
        raise SystemExit(f"error: {run} has another tokenizer than the first run; train every run with the same "
                         "data.tokenizer so their held-out windows are the same tokens")
    config = run_config(run)
    train = run_windows(config, tokenizer, "train")
    own_held_out = torch.equal(run_windows(config, tokenizer, "validation").input_ids, held_out.input_ids)
    model = MixerAutoencoder.from_pretrained(export).eval()
    with torch.no_grad():
        scores = autoencoder_scores(model, held_out.input_ids)
        seen = autoencoder_scores(model, evenly_spread(train.input_ids, seen_windows))
    return {
        "run": str(run), "seed": config.train.seed, "corpus": config.data.corpus,
        "train_fraction": config.data.train_fraction, "train_tokens": train.total_tokens,
        "train_windows": len(train), "steps": read_evaluations(run, "val_loss")[-1][0],
        "own_held_out": own_held_out,
        "logged_accuracy": dict(read_evaluations(run, "val_token_accuracy")) if own_held_out else {},
        "held_out_windows": len(held_out), "held_out_accuracy": scores["accuracy"], "held_out_ce": scores["ce"],
        "seen_accuracy": seen["accuracy"], "seen_ce": seen["ce"],
    }


def data_key(row: dict) -> tuple[str, float]:
    """Runs of the same corpus and share are seeds of one point of the curve."""
    return json.dumps(row["corpus"]), row["train_fraction"]


def pool_by_share(rows: list[dict]) -> list[dict]:
    """One entry per corpus and training share, fewest tokens first: its token count and the mean / spread of each
    score over its runs (seeds)."""
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for row in rows:
        groups[data_key(row)].append(row)
    pooled = []
    for key in sorted(groups, key=lambda key: groups[key][0]["train_tokens"]):
        group = groups[key]
        entry = {"corpus": group[0]["corpus"], "train_fraction": key[1], "train_tokens": group[0]["train_tokens"],
                 "runs": len(group), "seeds": [row["seed"] for row in group]}
        for measure in ("held_out_accuracy", "held_out_ce", "seen_accuracy", "seen_ce", "steps"):
            stats = seed_stats([row[measure] for row in group])
            entry[measure], entry[f"{measure}_std"] = stats.mean, stats.std
        pooled.append(entry)
    return pooled


def slope_per_doubling(rows: list[dict], key: str = "held_out_accuracy") -> tuple[float, float]:
    """Least-squares line ``key = intercept + slope * log2(train_tokens)`` over every run: (slope, intercept)."""
    xs = [math.log2(row["train_tokens"]) for row in rows]
    ys = [row[key] for row in rows]
    if len(set(xs)) < 2:
        raise SystemExit("error: the runs cover one training share; a slope needs at least two")
    line = statistics.linear_regression(xs, ys)
    return line.slope, line.intercept


def last_doubling(rows: list[dict]) -> list[dict]:
    """The runs of the two largest token counts among ``rows``."""
    largest = sorted({row["train_tokens"] for row in rows})[-2:]
    return [row for row in rows if row["train_tokens"] in largest]


def seed_spread(pooled: list[dict], key: str = "held_out_accuracy") -> float:
    """The largest spread (standard deviation) of ``key`` over the seeds of one share; 0 when no share has two."""
    return max((entry[f"{key}_std"] for entry in pooled if entry["runs"] > 1), default=0.0)


def data_verdict(slope: float, spread: float) -> str:
    """'data-limited' when a doubling of the text (``slope``, accuracy per doubling) buys more than twice the seed
    spread, 'not data-limited' when it buys less than the spread, otherwise 'inconclusive'."""
    if spread == 0.0:
        return "inconclusive (no share has two seeds, so no spread to weigh the slope against)"
    if slope > 2 * spread:
        return "data-limited"
    if abs(slope) < spread:
        return "not data-limited"
    return "inconclusive"


def crossing_tokens(slope: float, intercept: float, target: float) -> float | None:
    """Training tokens where the fitted line reaches ``target`` (None when the line does not rise)."""
    return 2 ** ((target - intercept) / slope) if slope > 0 else None


def corpus_label(entry: dict) -> str:
    """'0.25 of builtin', or the corpus files' names after 'builtin +' for a larger corpus."""
    corpus = entry["corpus"] if isinstance(entry["corpus"], list) else [entry["corpus"]]
    names = " + ".join(Path(spec).stem if spec != "builtin" else "builtin" for spec in corpus)
    return f"{entry['train_fraction']:g} of {names}"


def common_logged_step(rows: list[dict]) -> int | None:
    """The last evaluation step (after 0) that every run with a log on the common held-out set logged."""
    logs = [set(row["logged_accuracy"]) for row in rows if row["own_held_out"]]
    return max(set.intersection(*logs) - {0}, default=None) if logs else None


def plot(pooled: list[dict], fitted: list[dict], slope: float, intercept: float, path: Path) -> None:
    """Held-out and seen-window accuracy and CE against training tokens; the last doubling's line, extended."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key, label in ((accuracy_axis, "accuracy", "token accuracy"), (loss_axis, "ce", "CE (nats/token)")):
        for side, style in (("held_out", "o"), ("seen", "s")):
            for group, line in ((fitted, "-"), ([e for e in pooled if e not in fitted], "")):
                if group:
                    axis.errorbar([e["train_tokens"] for e in group], [e[f"{side}_{key}"] for e in group],
                                  yerr=[e[f"{side}_{key}_std"] for e in group], fmt=style + line, capsize=3,
                                  color="C0" if side == "held_out" else "C1",
                                  label=f"{side.replace('_', '-')} windows"
                                        + (", nested shares" if line else ", larger corpus"))
        axis.set_xscale("log", base=2)
        axis.set_xlabel("training tokens")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    tokens = [fitted[-2]["train_tokens"], pooled[-1]["train_tokens"]]
    line = [intercept + slope * math.log2(t) for t in tokens]
    accuracy_axis.plot(tokens, line, ":", color="black",
                       label=f"last doubling, extended: {100 * slope:+.1f} points per doubling")
    accuracy_axis.legend(fontsize=7)
    figure.suptitle("128-token autoencoder, same 20-minute budget, more or less text (mean ± std over seeds)")
    figure.savefig(path, dpi=110, bbox_inches="tight")


def best_logged_text(rows: list[dict]) -> str:
    """'19.9 % (step 1000)' for one run, the mean and each run's step for several, '' when no run has a log on
    the common held-out set."""
    best = [max(row["logged_accuracy"].items(), key=lambda point: point[1]) for row in rows if row["logged_accuracy"]]
    if not best:
        return ""
    steps = "/".join(str(step) for step, _ in best)
    return f"{100 * sum(value for _, value in best) / len(best):.1f} % (step {steps})"


def table_rows(pooled: list[dict], rows: list[dict], logged: dict[str, float | None]) -> list[list]:
    percent = lambda value: "" if value is None else f"{100 * value:.1f} %"  # noqa: E731
    return [[corpus_label(e), e["train_tokens"], f"{e['runs']} ({', '.join(map(str, e['seeds']))})",
             f"{e['steps']:.0f}", f"{100 * e['held_out_accuracy']:.1f} ± {100 * e['held_out_accuracy_std']:.1f} %",
             f"{e['held_out_ce']:.2f} ± {e['held_out_ce_std']:.2f}", percent(logged[corpus_label(e)]),
             best_logged_text([r for r in rows if data_key(r) == (json.dumps(e["corpus"]), e["train_fraction"])]),
             f"{100 * e['seen_accuracy']:.1f} %", f"{e['seen_ce']:.2f}"] for e in pooled]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    held_out, tokenizer_id = held_out_windows(Path(args.runs[0]))
    rows = [score_run(Path(run), held_out, tokenizer_id, args.seen_windows) for run in dict.fromkeys(args.runs)]
    pooled = pool_by_share(rows)
    fitted_rows = [row for row in rows if row["corpus"] == rows[0]["corpus"]]
    fitted = [entry for entry in pooled if entry["corpus"] == rows[0]["corpus"]]
    overall_slope, _ = slope_per_doubling(fitted_rows)
    slope, intercept = slope_per_doubling(last_doubling(fitted_rows))
    spread = seed_spread(pooled)
    call = data_verdict(slope, spread)
    crossing = crossing_tokens(slope, intercept, args.target)
    step = common_logged_step(rows)
    logged = {}
    for entry in pooled:
        values = [row["logged_accuracy"][step] for row in rows if row["own_held_out"]
                  and data_key(row) == (json.dumps(entry["corpus"]), entry["train_fraction"])]
        logged[corpus_label(entry)] = sum(values) / len(values) if step is not None and values else None
    table = markdown_table(
        ["training text", "training tokens", "runs (seeds)", "steps", "held-out accuracy", "held-out CE",
         f"held-out accuracy at step {step} (training log)", "best held-out accuracy in the training log",
         "seen-window accuracy", "seen-window CE"],
        table_rows(pooled, rows, logged))
    summary = (f"{len(held_out)} held-out windows of {held_out.window} tokens (those of {args.runs[0]}) for every "
               f"run. Held-out accuracy against log2(training tokens): {100 * overall_slope:+.2f} points per "
               f"doubling over all nested shares, {100 * slope:+.2f} over the last doubling (largest seed spread "
               f"{100 * spread:.2f} points): **{call}**.")
    for entry in pooled:
        if entry not in fitted:
            expected = intercept + slope * math.log2(entry["train_tokens"])
            summary += (f" {corpus_label(entry)} ({entry['train_tokens'] / fitted[-1]['train_tokens']:.3g} times the "
                        f"tokens): the last doubling's line predicts {100 * expected:.1f} %, measured "
                        f"{100 * entry['held_out_accuracy']:.1f} %.")
    if crossing is not None:
        doublings = math.log2(crossing / pooled[-1]["train_tokens"])
        summary += (f" Extrapolated, not measured: the last doubling's line reaches {100 * args.target:.0f} % at about "
                    f"{crossing:.2g} training tokens, {doublings:.0f} more doublings of the largest corpus, if it "
                    "stayed straight and the budget grew with it.")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(pooled, fitted, slope, intercept, out.with_suffix(".png"))
    command = "python benchmarks/findings/autoencoder_data_scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([f"# {out.name}", "", f"Command: `{command}`", "", table, "", summary, "",
                      f"![{out.name}]({out.name}.png)", ""])
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"runs": rows, "shares": pooled, "overall_slope_per_doubling": overall_slope,
                                                    "last_doubling_slope": slope,
                                                    "intercept": intercept, "seed_spread": spread, "verdict": call,
                                                    "target_crossing_tokens": crossing, "logged_step": step,
                                                    "logged_held_out_accuracy": logged}, indent=1), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
