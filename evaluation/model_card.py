"""Write a report's numbers into a local model folder's model card (README.md YAML ``model-index``).

Uses huggingface_hub's `ModelCard` / `EvalResult` on the local file only (no network): the card is
loaded, results with the same task, dataset, split and metric type are replaced (so rerunning the
report, or running it after the training export wrote its validation numbers, does not duplicate
entries), the others are kept, and the card is saved. A folder without README.md gets a minimal card.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

BUILTIN_DATASET_NAME = "memmix built-in corpus (Python standard-library docstrings and pydoc topics)"
TASK_OF_FAMILY = {"causal": "text-generation", "memory": "text-generation", "autoencoder": "feature-extraction"}


def dataset_identity(spec: str) -> tuple[str, str]:
    """(dataset_name, dataset_type) for a corpus spec, matching what the training export writes."""
    if spec == "builtin":
        return BUILTIN_DATASET_NAME, "text"
    if Path(spec).suffix or any(ch in spec for ch in "*?[") or Path(spec).exists() or "/" not in spec:
        return Path(spec).name or spec, "text"
    return spec, spec.split(":", 1)[0]


def report_metrics(report: dict) -> list[tuple[str, float, str]]:
    """(metric_type, value, pretty name) of the report's headline numbers for its family."""
    results, family = report["results"], report["family"]
    summary = results["summary"]
    if family == "autoencoder":
        fmt = summary["embedding_format"]
        return [
            ("bits_per_byte", summary["total_bits_per_byte"], f"Total bits per byte (embedding {fmt} + residual)"),
            ("loss", summary["cross_entropy"], "Reconstruction loss (nats/token)"),
            ("accuracy", summary["hamming_accuracy"], "Hamming accuracy (tokens regenerated exactly)"),
            ("information_retained", summary["information_retained"], "Information retained I_e"),
        ]
    if report["data"].get("scoring") == "documents":
        # its own metric types: a document-mode number must not replace the packed-window one in the card
        return [
            ("bits_per_byte_documents", summary["bits_per_byte"],
             "Bits per byte, each document scored alone (lm-evaluation-harness rolling windows)"),
            ("loss_documents", summary["cross_entropy"], "Loss per token, each document scored alone (nats/token)"),
        ]
    entries = [
        ("bits_per_byte", summary["bits_per_byte"], "Validation bits per byte"),
        ("loss", summary["cross_entropy"], "Validation loss (nats/token)"),
    ]
    if family == "memory":
        entries.append(("loss_memories_removed", results["memories_removed"]["cross_entropy"],
                        "Loss with memories removed (nats/token)"))
        oracle = results.get("oracle")
        if oracle:
            fmt = report["config"].get("embedding_quantization") or "fp32"
            if fmt in oracle:
                entries.append(("normalized_loss", oracle[fmt]["normalized_loss"],
                                f"Normalized loss, memories stored as {fmt} (nats/token)"))
    return entries


def eval_results_of(report: dict, model_name: str) -> list[EvalResult]:
    """EvalResult entries for the report's headline numbers."""
    dataset_name, dataset_type = dataset_identity(report["data"]["spec"])
    return [
        EvalResult(
            task_type=TASK_OF_FAMILY[report["family"]],
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=report["data"]["split"],
            metric_type=metric_type,
            metric_value=round(float(value), 6),
            metric_name=name,
        )
        for metric_type, value, name in report_metrics(report)
    ]


def _same_result(first: EvalResult, second: EvalResult) -> bool:
    keys = ("task_type", "dataset_type", "dataset_name", "dataset_split", "metric_type")
    return all(getattr(first, key) == getattr(second, key) for key in keys)


def update_model_card(folder: str | Path, report: dict) -> Path:
    """Merge the report's numbers into ``folder/README.md``'s model-index; returns the card's path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model card update needs a local model folder; {str(folder)!r} is not a folder")
    path = folder / "README.md"
    if path.is_file():
        card = ModelCard.load(path)
    else:
        data = ModelCardData(library_name="transformers", tags=["memmix"])
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {folder.name}\n\nA memmix model.\n")
    model_name = card.data.model_name or folder.name
    new_results = eval_results_of(report, model_name)
    kept = [old for old in (card.data.eval_results or []) if not any(_same_result(old, new) for new in new_results)]
    card.data.model_name = model_name
    card.data.eval_results = kept + new_results
    card.save(path)
    return path
