"""Quantization-aware training experiment (issue 7, point 4): does QAT noise make int8 embeddings cheaper?

Trains the same tiny `MixerAutoencoder` twice on the built-in corpus — same seed, same initial weights,
same batches — once plainly and once with ``embedding_noise`` (uniform noise of half the int8 step added
to the embedding in training mode), then scores both on the held-out windows with the embedding stored in
every format (fp32, bf16, fp16, e4m3, e5m2, int8, int4) and prints / writes the seed-like table
(`evaluation.qat_table`). Repeat over several seeds to see whether the direction is robust.

Run on a CPU (a few minutes per model on 2 cores)::

    python benchmarks/qat_experiment.py                       # seeds 0-4, 800 steps, writes RESULTS_qat.md
    python benchmarks/qat_experiment.py --seeds 0 --steps 150 --out ''   # quick look, no file
    python benchmarks/qat_experiment.py --noise_position pre_bottleneck  # the seed's variant

The optimizer, schedule and step are train_accelerate.py's (`memmix_train.loop`: AdamW without decay on 1-D
weights, warmup + cosine, gradient clipping); the batch order comes from its own generator, so the noise draws
of the QAT run do not change which windows either run sees.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.loading import LoadedModel  # noqa: E402
from evaluation.qat_table import format_losses, qat_gap_summary, render_qat_table  # noqa: E402
from evaluation.report import evaluate_autoencoder  # noqa: E402
from memmix_data import load_documents, load_or_build_windows, load_or_train_tokenizer, split_documents  # noqa: E402
from memmix_train.config import TrainConfig  # noqa: E402
from memmix_train.loop import build_optimizer, build_scheduler, train_step  # noqa: E402
from modeling_memmix import MixerAutoencoder, MixerAutoencoderConfig  # noqa: E402
from modeling_memmix.quantization import EMBEDDING_FORMATS  # noqa: E402

DEFAULT_OUT = Path(__file__).with_name("RESULTS_qat.md")
DEFAULT_WORK_DIR = Path("runs/qat_experiment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup_steps", type=int, default=20)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers each")
    parser.add_argument("--n_ctx", type=int, default=8)
    parser.add_argument("--embedding_dim", type=int, default=8, help="bottleneck: values per window")
    parser.add_argument("--vocab_size", type=int, default=300, help="small, so a few hundred steps leave the unigram plateau")
    parser.add_argument("--decoder_input", default="unroll", choices=("repeat", "unroll"))
    parser.add_argument("--qat_formats", nargs="+", default=["int8", "int4"], choices=EMBEDDING_FORMATS,
                        help="one QAT run per format, each compared with the same plain run")
    parser.add_argument("--noise_position", default="embedding", choices=("embedding", "pre_bottleneck"))
    parser.add_argument("--eval_windows", type=int, default=512, help="held-out windows scored per format")
    parser.add_argument("--threads", type=int, default=1,
                        help="1 is fastest on a shared machine (2 threads on busy cores run 40x slower)")
    parser.add_argument("--work_dir", default=str(DEFAULT_WORK_DIR), help="tokenizer and window cache")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown results file ('' = print only)")
    return parser


def prepare_data(args: argparse.Namespace):
    """Tokenizer (trained once on the training split, then reused) and packed train / validation windows."""
    work_dir = Path(args.work_dir)
    documents = load_documents("builtin")
    train_docs, _ = split_documents(documents, 0.05, 0)
    tokenizer = load_or_train_tokenizer(str(work_dir / f"tokenizer_{args.vocab_size}"), train_docs, args.vocab_size)
    windows = {
        split: load_or_build_windows("builtin", tokenizer, window=args.n_ctx, split=split,
                                     cache_dir=str(work_dir / "cache"))
        for split in ("train", "validation")
    }
    return tokenizer, windows


def model_config(args: argparse.Namespace, vocab_size: int, noise: str | None) -> MixerAutoencoderConfig:
    return MixerAutoencoderConfig(
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers, n_ctx=args.n_ctx,
        embedding_dim=args.embedding_dim, decoder_input=args.decoder_input, embedding_noise=noise, embedding_noise_position=args.noise_position,
    )


def train_autoencoder(config: MixerAutoencoderConfig, train_ids: torch.Tensor, args: argparse.Namespace,
                      seed: int) -> tuple[MixerAutoencoder, list[float]]:
    """Train from the seed's initial weights on the seed's batch order; returns the model and loss curve."""
    train = TrainConfig(lr=args.lr, weight_decay=0.01, betas=[0.9, 0.95], warmup_steps=args.warmup_steps,
                        max_steps=args.steps, batch_size=args.batch_size, grad_clip=1.0)
    accelerator = Accelerator(cpu=True)  # one plain process: train_step's backward / clip / reduce are torch's own
    torch.manual_seed(seed)
    model = MixerAutoencoder(config)
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train)
    batches = torch.Generator().manual_seed(seed)
    model.train()
    curve = []
    for _ in range(train.max_steps):
        rows = torch.randint(0, train_ids.shape[0], (train.batch_size,), generator=batches)
        batch = train_ids[rows]
        loss, _ = train_step(model, optimizer, scheduler, [{"input_ids": batch, "labels": batch}], accelerator,
                             train.grad_clip)
        curve.append(loss)
    return model.eval(), curve


def score_formats(model: MixerAutoencoder, tokenizer, eval_ids: torch.Tensor) -> dict:
    """The report's autoencoder measures (`evaluation.report.evaluate_autoencoder`) for every format."""
    loaded = LoadedModel(model=model, tokenizer=tokenizer, family="autoencoder", source="in memory",
                         local_folder=None)
    options = {"batch_size": 64, "progress": False, "embedding_formats": list(EMBEDDING_FORMATS)}
    with torch.no_grad():
        return evaluate_autoencoder(loaded, eval_ids, options)


def run_seed(args: argparse.Namespace, seed: int, tokenizer, windows) -> dict:
    """Both trainings of one seed and their per-format results."""
    vocab_size = len(tokenizer)
    eval_ids = windows["validation"].input_ids[: args.eval_windows]
    results = {}
    for label, noise in (("no QAT", None), *((f"QAT {fmt}", fmt) for fmt in args.qat_formats)):
        started = time.time()
        model, curve = train_autoencoder(model_config(args, vocab_size, noise), windows["train"].input_ids, args, seed)
        results[label] = score_formats(model, tokenizer, eval_ids)
        results[label]["train_loss_last_20"] = sum(curve[-20:]) / len(curve[-20:])
        results[label]["train_seconds"] = round(time.time() - started, 1)
        print(f"seed {seed} {label}: train loss {results[label]['train_loss_last_20']:.4f}, "
              f"{results[label]['train_seconds']} s", flush=True)
    return results


def settings_text(args: argparse.Namespace, vocab_size: int, eval_windows: int) -> str:
    return (
        f"MixerAutoencoder hidden {args.hidden_size}, {args.layers}+{args.layers} mixer layers, n_ctx {args.n_ctx}, "
        f"embedding_dim {args.embedding_dim}, vocab {vocab_size}; {args.steps} steps x {args.batch_size} windows, "
        f"lr {args.lr}, AdamW + warmup {args.warmup_steps} + cosine; QAT noise {'/'.join(args.qat_formats)} at "
        f"`{args.noise_position}`; scored on {eval_windows} held-out windows of the built-in corpus"
    )


def render_results(args: argparse.Namespace, per_seed: dict[int, dict], vocab_size: int, eval_windows: int,
                   command: str) -> str:
    """Markdown: settings, one table per seed and QAT format, and the gap summary over seeds."""
    lines = ["# Quantization-aware training: loss per embedding format, with and without QAT noise", "",
             f"Command: `{command}`", "", settings_text(args, vocab_size, eval_windows) + ".", ""]
    summary = []
    for seed, results in per_seed.items():
        for fmt in args.qat_formats:
            labels = ("no QAT", f"QAT {fmt}")
            lines += [f"## Seed {seed}: no QAT vs QAT {fmt}", "",
                      render_qat_table(results[labels[0]], results[labels[1]], labels), ""]
            summary += [(f"seed {seed}, QAT {fmt}", results[labels[0]], results[labels[1]], stored)
                        for stored in dict.fromkeys([fmt, "int8"])]
    lines += ["## Summary over seeds", "",
              "Gap = reconstruction CE with the embedding stored in that format minus CE with the fp32 embedding "
              "(nats/token), for the plain model and for the model trained with QAT noise of that format.", "",
              qat_gap_summary(summary), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer, windows = prepare_data(args)
    eval_windows = min(args.eval_windows, windows["validation"].input_ids.shape[0])
    per_seed = {seed: run_seed(args, seed, tokenizer, windows) for seed in args.seeds}
    command = "python benchmarks/qat_experiment.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render_results(args, per_seed, len(tokenizer), eval_windows, command.strip())
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0 if all(math.isfinite(v) for r in per_seed.values() for x in r.values()
                    for v in format_losses(x).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
