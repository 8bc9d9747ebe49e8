"""Write the documents memmix evaluates as an lm-evaluation-harness task, to check the report against the harness.

lm-evaluation-harness (``pip install lm_eval``; not a memmix dependency) scores a ``loglikelihood_rolling``
task the way ``python -m evaluation.report --scoring documents`` does (evaluation/document_scoring.py), so
both give the same bits per byte on the same documents. This script writes those documents (the same corpus
spec, split and limits the report takes) to ``documents.jsonl`` and a task file ``memmix_documents.yaml``
next to it; then::

    python -m evaluation.lm_eval_task --data my_text.txt --split all --out /tmp/memmix_lm_eval
    lm_eval --model hf --model_args pretrained=runs/mixer_tiny/export,trust_remote_code=True,dtype=float32 \\
        --tasks memmix_documents --include_path /tmp/memmix_lm_eval --device cpu --batch_size 8

prints ``bits_per_byte`` for the task. For a memory model add ``max_length=<n_ctx * (max_memories + 1)>``
to ``--model_args`` (the harness would otherwise read only ``n_ctx``, the chunk length, from the config).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from memmix_data import load_documents, split_documents

TASK_NAME = "memmix_documents"
TASK_TEMPLATE = """# lm-evaluation-harness task written by `python -m evaluation.lm_eval_task` (memmix)
task: {task}
dataset_path: json
dataset_kwargs:
  data_files: {data_file}
test_split: train
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: 1.0
"""


def evaluated_documents(
    spec: str,
    split: str = "all",
    validation_fraction: float = 0.05,
    split_seed: int = 0,
    text_column: str = "text",
    hub_split: str = "train",
    max_documents: int | None = None,
) -> list[str]:
    """The documents the report scores for these settings (`evaluation.loading.load_evaluation_data`)."""
    if split not in ("all", "validation", "train"):
        raise ValueError(f"split must be 'all', 'validation' or 'train', got {split!r}")
    documents = load_documents(spec, text_column=text_column, split=hub_split, max_documents=max_documents)
    if split == "all":
        return documents
    train, validation = split_documents(documents, validation_fraction, seed=split_seed)
    return validation if split == "validation" else train


def write_task(documents: list[str], out: str | Path, task: str = TASK_NAME) -> Path:
    """Write ``documents.jsonl`` and ``<task>.yaml`` into `out`; returns the YAML's path."""
    if not documents:
        raise ValueError("No documents to write")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_file = (out / "documents.jsonl").resolve()
    data_file.write_text(
        "".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in documents), encoding="utf-8"
    )
    path = out / f"{task}.yaml"
    path.write_text(TASK_TEMPLATE.format(task=task, data_file=json.dumps(str(data_file))), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.lm_eval_task",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", default="builtin", help="corpus spec, as for python -m evaluation.report")
    parser.add_argument("--split", default="all", choices=("all", "validation", "train"))
    parser.add_argument(
        "--validation_fraction", type=float, default=0.05, help="the training run's (see the report)"
    )
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--hub_split", default="train")
    parser.add_argument("--max_documents", type=int, default=None)
    parser.add_argument("--out", required=True, help="folder for documents.jsonl and the task YAML")
    args = parser.parse_args(argv)
    try:
        documents = evaluated_documents(
            args.data,
            args.split,
            args.validation_fraction,
            args.split_seed,
            args.text_column,
            args.hub_split,
            args.max_documents,
        )
        path = write_task(documents, args.out)
    except (ValueError, FileNotFoundError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = sum(len(text.encode("utf-8")) for text in documents)
    print(
        f"wrote {path} ({len(documents)} documents, {size} bytes); run lm_eval with --include_path {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
