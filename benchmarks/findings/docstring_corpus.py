"""A corpus larger than the built-in one, made the same way: the docstrings of installed packages, written as a
JSON-lines file that ``data.corpus`` reads next to ``"builtin"`` (the data-scaling runs of docs/FINDINGS.md)::

    python benchmarks/findings/docstring_corpus.py --out runs/corpora/package_docstrings.jsonl
    python train_accelerate.py --preset configuration/autoencoder_128.json \\
        --set 'data.corpus=["builtin", "runs/corpora/package_docstrings.jsonl"]' \\
        --set data.tokenizer=runs/autoencoder_128/tokenizer --set train.output_dir=runs/autoencoder_128_packages

Packages are read from their source files with ``ast`` (never imported), test and vendored folders skipped
(`memmix_data.package_docstrings`). A docstring that is also a built-in document is left out, and the split is by
a hash of each document's text, so the built-in corpus's held-out documents stay held out, and unseen, in a run
that adds this file. Near-copies are looked for too: the script prints how many of the held-out built-in documents'
word 13-grams (the unit of GPT-3's contamination study) the written text holds, beside how many the built-in
training documents hold (the ordinary overlap of docstrings), and how many held-out documents it holds more than
half of. The text depends on the installed versions; the file's name, size and per-package counts are printed so a
run can say what it read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from memmix_codec.codec import atomic_output  # noqa: E402
from memmix_data import builtin_documents, package_docstrings, split_documents  # noqa: E402

DEFAULT_PACKAGES = ("numpy", "pandas", "sympy", "matplotlib", "networkx", "datasets", "torch", "transformers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES),
                        help="installed top-level packages to read (default: %(default)s)")
    parser.add_argument("--out", required=True, help="the .jsonl file to write (its folder is created)")
    return parser


def package_folder(name: str) -> Path:
    """The source folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: {name!r} is not an installed package (a folder of Python sources)")
    return Path(next(iter(spec.submodule_search_locations)))


def word_ngrams(text: str, n: int = 13) -> set[int]:
    """Hashes of the lower-cased n-grams of words and punctuation marks of ``text`` (empty when it is shorter)."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    return {hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1)}


def held_out_overlap(texts: Iterable[str], n: int = 13) -> dict:
    """What ``texts`` share with the built-in held-out documents (the split of every run: 5 % by a hash, seed 0):
    the share of the held-out n-grams found in ``texts``, the share found in the built-in training documents (the
    yardstick: docstrings repeat phrases), and how many held-out documents have more than half their n-grams in
    ``texts`` (near-copies)."""
    train, held_out = split_documents(builtin_documents(), 0.05, 0)
    held_out_grams = [word_ngrams(document, n) for document in held_out]
    corpus_grams = set().union(*(word_ngrams(text, n) for text in texts))
    train_grams = set().union(*(word_ngrams(document, n) for document in train))
    total = sum(len(grams) for grams in held_out_grams)
    return {
        "n": n, "held_out_documents": len(held_out), "held_out_ngrams": total,
        "in_corpus": sum(len(grams & corpus_grams) for grams in held_out_grams) / total,
        "in_builtin_train": sum(len(grams & train_grams) for grams in held_out_grams) / total,
        "near_copies": sum(1 for grams in held_out_grams if grams and len(grams & corpus_grams) > len(grams) / 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise SystemExit(f"error: --out {out} must end in .jsonl (data.corpus reads it as JSON lines)")
    folders = {name: package_folder(name) for name in args.packages}  # every name checked before any reading
    seen = set(builtin_documents())
    records, counts = [], {}
    for name, folder in tqdm(folders.items(), desc="packages", unit="package"):
        kept = [text for text in package_docstrings(folder) if text not in seen]
        seen.update(kept)
        records += [{"text": text, "package": name} for text in kept]
        counts[name] = (len(kept), sum(len(text.encode()) for text in kept))
    if not records:
        raise SystemExit(f"error: the packages {args.packages} hold no docstring of 200 characters or more")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as handle:  # no half-written corpus if writing stops
        handle.writelines((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8") for record in records)
    for name, (documents, size) in counts.items():
        print(f"{name:>14}: {documents:6d} documents, {size / 1e6:6.2f} MB  ({folders[name]})")
    total = sum(size for _, size in counts.values())
    print(f"wrote {out}: {len(records)} documents, {total / 1e6:.2f} MB of text")
    overlap = held_out_overlap(record["text"] for record in records)
    print(f"held-out built-in documents: {100 * overlap['in_corpus']:.2f} % of their {overlap['held_out_ngrams']} "
          f"word {overlap['n']}-grams are in {out.name} ({100 * overlap['in_builtin_train']:.2f} % in the built-in "
          f"training documents); {overlap['near_copies']} of {overlap['held_out_documents']} are more than half in it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
