"""Held-out windows beside what an autoencoder regenerates from their single embedding, as a Markdown table.

The windows come from the validation side of the corpus (documents the model never trained on), packed exactly
as training packs them; each is encoded to one embedding (optionally stored in ``--embedding_format``), decoded
in one pass, and the argmax tokens are detokenized. Regenerated tokens that differ from the input are shown in
bold, so a reader sees where the embedding lost information::

    python benchmarks/findings/show_regeneration.py runs/autoencoder_32/export --count 4
    python benchmarks/findings/show_regeneration.py runs/autoencoder_32/export --embedding_format int8 --out x.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluation.loading import load_evaluation_data, load_model_and_tokenizer  # noqa: E402
from modeling_memmix.quantization import EMBEDDING_FORMATS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an exported autoencoder folder (or Hub id)")
    parser.add_argument("--corpus", default="builtin")
    parser.add_argument("--count", type=int, default=4, help="windows to show")
    parser.add_argument("--first", type=int, default=0, help="index of the first held-out window shown")
    parser.add_argument("--embedding_format", default=None, choices=EMBEDDING_FORMATS)
    parser.add_argument("--out", default="", help="also write the table to this Markdown file")
    return parser


def escape(text: str) -> str:
    """Text safe inside one Markdown table cell (newlines shown as ⏎, pipes escaped)."""
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "⏎")


def cell(text: str) -> str:
    return escape(text).strip() or " "


def marked_output(tokenizer, predicted: list[int], target: list[int]) -> str:
    """The regenerated text with every wrong token in bold (its leading space kept outside the bold marks, so
    Markdown renders it; a wrong token that is only whitespace shows as a bold ␣)."""
    pieces = []
    for guess, truth in zip(predicted, target):
        text = escape(tokenizer.decode([guess]))
        if guess == truth:
            pieces.append(text)
            continue
        core = text.lstrip(" ")
        pieces.append(f"{text[: len(text) - len(core)]}**{core.rstrip(' ') or '␣'}**")
    return "".join(pieces).strip()


def regeneration_table(model, tokenizer, windows: torch.Tensor, embedding_format: str | None) -> tuple[str, float]:
    """The Markdown table (input, regenerated, tokens exact) and the fraction of tokens regenerated exactly."""
    with torch.no_grad():
        predicted = model(input_ids=windows, embedding_format=embedding_format).logits.argmax(-1)
    lines = ["| held-out input | regenerated from one embedding | tokens exact |", "|---|---|---|"]
    for target, guess in zip(windows.tolist(), predicted.tolist()):
        exact = sum(a == b for a, b in zip(target, guess))
        lines.append(f"| {cell(tokenizer.decode(target))} | {marked_output(tokenizer, guess, target)} | "
                     f"{exact}/{len(target)} |")
    return "\n".join(lines), float((predicted == windows).float().mean())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    loaded = load_model_and_tokenizer(args.model)
    if loaded.family != "autoencoder":
        raise SystemExit(f"error: {args.model} holds a {loaded.family} model; this script shows autoencoders")
    data = load_evaluation_data(args.corpus, loaded.tokenizer, loaded.model.config.n_ctx,
                                max_windows=args.first + args.count)
    windows = data.windows.input_ids[args.first : args.first + args.count]
    if len(windows) == 0:
        raise SystemExit(f"error: the held-out side has no window at index {args.first}")
    table, accuracy = regeneration_table(loaded.model.eval(), loaded.tokenizer, windows, args.embedding_format)
    text = (f"{len(windows)} held-out windows of {loaded.model.config.n_ctx} tokens, embedding stored as "
            f"{args.embedding_format or 'float'}; {accuracy:.1%} of these tokens regenerated exactly "
            f"(wrong tokens in bold).\n\n{table}\n")
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
