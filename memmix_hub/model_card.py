"""The one model-card writer of memmix, built on huggingface_hub's `ModelCard` (local files only, no network).

The training export writes a new card (front matter with a ``model-index`` of the validation numbers, then a
body it composes); the evaluation report merges its numbers into an existing card. Both go through here, so a
card has one shape whoever wrote it, and the report's numbers replace the export's when they measure the same
thing (same task, dataset, split and metric type)::

    results = eval_results("text-generation", *dataset_identity("builtin"), "validation",
                           [("bits_per_byte", 2.0812, "Validation bits per byte")], decimals=4, pad_decimals=True)
    card = new_model_card("my-model", body, eval_results=results, tags=["memmix"], license="apache-2.0")
    card.save("export/README.md")
    merge_into_card("export", more_results)   # replace matching entries, keep the others

Metric values are rounded to `decimals`; with ``pad_decimals`` they are written with exactly that many
decimals (``value: 2.0800``), as the training card always showed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

BUILTIN_DATASET_NAME = "memmix built-in corpus (Python standard-library docstrings and pydoc topics)"
MODEL_CARD_FILE = "README.md"
# what makes two results "the same measurement" (the newer one replaces the older)
RESULT_IDENTITY = ("task_type", "dataset_type", "dataset_name", "dataset_split", "metric_type")


class FixedDecimals(float):
    """A float that YAML writes with a fixed number of decimals (``2.08`` with 4 decimals: ``2.0800``)."""

    decimals: int

    def __new__(cls, value: float, decimals: int) -> FixedDecimals:
        number = super().__new__(cls, round(float(value), decimals))
        number.decimals = decimals
        return number

    def __reduce__(self):  # copy.deepcopy (ModelCardData.to_dict) must keep the decimals
        return (FixedDecimals, (float(self), self.decimals))


def _represent_fixed(dumper: yaml.BaseDumper, value: FixedDecimals) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:float", f"{float(value):.{value.decimals}f}")


for _dumper in (yaml.Dumper, yaml.SafeDumper):  # huggingface_hub dumps with yaml.Dumper
    yaml.add_representer(FixedDecimals, _represent_fixed, Dumper=_dumper)


def dataset_identity(spec: str) -> tuple[str, str]:
    """(dataset_name, dataset_type) of a corpus spec: the built-in corpus, a local file (its name) or a Hub
    dataset id (``org/name[:config]``, type ``org/name``)."""
    if spec == "builtin":
        return BUILTIN_DATASET_NAME, "text"
    if Path(spec).suffix or any(ch in spec for ch in "*?[") or Path(spec).exists() or "/" not in spec:
        return Path(spec).name or spec, "text"
    return spec, spec.split(":", 1)[0]


def eval_results(
    task: str,
    dataset_name: str,
    dataset_type: str,
    split: str,
    metrics: Iterable[tuple[str, float, str]],
    decimals: int = 6,
    pad_decimals: bool = False,
) -> list[EvalResult]:
    """One `EvalResult` per ``(metric_type, value, pretty name)`` of `metrics`, all on the same task and data."""
    return [
        EvalResult(
            task_type=task,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric_type,
            metric_value=FixedDecimals(value, decimals) if pad_decimals else round(float(value), decimals),
            metric_name=name,
        )
        for metric_type, value, name in metrics
    ]


def same_result(first: EvalResult, second: EvalResult) -> bool:
    """True when both measure the same thing (`RESULT_IDENTITY`), whatever their values."""
    return all(getattr(first, key) == getattr(second, key) for key in RESULT_IDENTITY)


def new_model_card(
    model_name: str,
    body: str,
    *,
    eval_results: Sequence[EvalResult] = (),
    library_name: str = "transformers",
    license: str | None = None,
    base_model: str | None = None,
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
) -> ModelCard:
    """A card: YAML front matter (library, license, base model, tags, Hub datasets, ``model-index`` of
    `eval_results` under `model_name`), then `body` (Markdown, conventionally starting with ``\\n# name``)."""
    data = ModelCardData(
        library_name=library_name,
        license=license,
        base_model=base_model,
        tags=list(tags) or None,
        datasets=list(datasets) or None,
        model_name=model_name,
        eval_results=list(eval_results) or None,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    card.data = data  # the parsed copy would have lost FixedDecimals' padding
    return card


def merge_results(card: ModelCard, results: Sequence[EvalResult], model_name: str) -> ModelCard:
    """Put `results` into the card's model-index: each replaces the entries measuring the same thing, the
    other entries are kept (so merging twice does not duplicate anything)."""
    kept = [old for old in (card.data.eval_results or []) if not any(same_result(old, new) for new in results)]
    card.data.model_name = card.data.model_name or model_name
    card.data.eval_results = kept + list(results)
    return card


def merge_into_card(folder: str | Path, results: Sequence[EvalResult], model_name: str | None = None) -> Path:
    """Merge `results` into ``folder/README.md`` (a minimal memmix card when there is none); returns its path.

    `model_name` names the model-index entry of a card that has none (default: the folder's name).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model card update needs a local model folder; {str(folder)!r} is not a folder")
    path = folder / MODEL_CARD_FILE
    name = model_name or folder.name
    if path.is_file():
        card = ModelCard.load(path)
    else:
        card = new_model_card(name, f"\n# {folder.name}\n\nA memmix model.\n", tags=["memmix"])
    merge_results(card, results, card.data.model_name or name)
    card.save(path)
    return path


__all__ = [
    "BUILTIN_DATASET_NAME",
    "MODEL_CARD_FILE",
    "FixedDecimals",
    "dataset_identity",
    "eval_results",
    "merge_into_card",
    "merge_results",
    "new_model_card",
    "same_result",
]
