"""The evaluation report as a library: load a saved model and its data, measure, assemble, write the files.

`python -m evaluation.report` (evaluation/report.py) is a thin command over this module; from Python::

    from evaluation.options import ReportOptions
    from evaluation.reporting import create_report, run, run_report

    report = run(ReportOptions(model="runs/mixer_tiny/export", max_windows=50))   # measure and write files
    report = run_report("runs/mixer_tiny/export", "builtin", "reports/x", max_windows=50)  # the same, keywords
    report = create_report(ReportOptions(model="runs/mixer_tiny/export"))          # the dict only, no files

Steps: `load_inputs` (model, tokenizer, evaluation windows or documents, with the training run's split
settings), `build_report` (every number as a JSON-ready dict; `evaluation.evaluators` per family,
`evaluation.baselines` for the compressors), `write_report` (report.json, report.md, PNG charts) and, with
``update_model_card``, the model folder's card (`evaluation.model_card`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from evaluation.baselines import compressor_baselines, document_compressor_baselines
from evaluation.document_scoring import causal_max_length
from evaluation.evaluators import evaluate, evaluate_documents, trivial_encoding_test
from evaluation.loading import (
    EvaluationData,
    LoadedModel,
    load_evaluation_data,
    load_model_and_tokenizer,
    split_settings_for,
)
from evaluation.measures import first_scored_position
from evaluation.options import EvaluatorOptions, ReportOptions

CONFIG_SUMMARY_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "n_ctx", "embedding_dim",
                       "memory_mode", "max_memories", "memory_dim", "embedding_format")
# the model's row in the bits-per-byte table, by family (report.md, the chart and the tests read these labels)
MODEL_LABELS = {"mixer": "memmix causal LM", "memory": "memmix memory model"}


def config_summary(config) -> dict:
    """The config fields a reader of the report needs (None fields left out)."""
    return {key: getattr(config, key) for key in CONFIG_SUMMARY_KEYS if getattr(config, key, None) is not None}


def model_bits_per_byte(family: str, result: dict) -> dict[str, float]:
    """The model's entries of the bits-per-byte comparison (windows scoring)."""
    if family == "mixer":
        return {MODEL_LABELS["mixer"]: result["summary"]["bits_per_byte"]}
    if family == "autoencoder":
        return {f"memmix autoencoder total ({embedding_format})": value["total_bits_per_byte"]
                for embedding_format, value in result["formats"].items()}
    table = {
        MODEL_LABELS["memory"]: result["summary"]["bits_per_byte"],
        f"{MODEL_LABELS['memory']}, memories removed": result["memories_removed"]["bits_per_byte"],
    }
    for embedding_format, value in result.get("oracle", {}).items():
        table[f"memmix oracle total ({embedding_format})"] = value["total_bits_per_byte"]
    return table


def _with_compressor_rows(table: dict[str, float], report: dict) -> dict[str, float]:
    for method, settings in report.get("compressors", {}).get("bits_per_byte", {}).items():
        for setting, value in settings.items():
            table[f"{method} ({setting})"] = value
    return table


def _strip_tensors(result: dict) -> dict:
    return {key: value for key, value in result.items() if not isinstance(value, torch.Tensor)}


def build_document_report(loaded: LoadedModel, data: EvaluationData, options: EvaluatorOptions) -> dict:
    """`build_report` for ``scoring="documents"``."""
    started = time.time()
    result = evaluate_documents(loaded, data.documents, options)
    summary = result["summary"]
    report = {
        "model": loaded.source,
        "family": loaded.family,
        "config": config_summary(loaded.model.config),
        "data": {
            "spec": data.spec, "split": data.split, "scoring": "documents", "documents": summary["documents"],
            "windows": summary["windows"], "window_tokens": summary["max_length"], "stride": summary["stride"],
            "scored_from_token": 0, **data.settings,
        },
        "results": result,
    }
    if options.compressors:
        report["compressors"] = document_compressor_baselines(data, options)
    report["bits_per_byte"] = _with_compressor_rows(
        {f"{MODEL_LABELS[loaded.family]} (documents)": summary["bits_per_byte"]}, report)
    report["seconds"] = round(time.time() - started, 2)
    return report


def build_report(
    loaded: LoadedModel, data: EvaluationData, options: EvaluatorOptions | dict, scoring: str = "windows"
) -> dict:
    """Every number of the report as a JSON-ready dict (no files written)."""
    options = EvaluatorOptions.coerce(options)
    if scoring == "documents":
        return build_document_report(loaded, data, options)
    started = time.time()
    input_ids = data.windows.input_ids
    result = evaluate(loaded, input_ids, options)
    report = {
        "model": loaded.source,
        "family": loaded.family,
        "config": config_summary(loaded.model.config),
        "data": {
            "spec": data.spec, "split": data.split, "scoring": "windows", "windows": input_ids.shape[0],
            "window_tokens": data.windows.window,
            "scored_from_token": first_scored_position(loaded.family), **data.settings,
        },
        "results": _strip_tensors(result),
        "trivial_encoding": trivial_encoding_test(loaded, input_ids, options),
    }
    if options.compressors:
        report["compressors"] = compressor_baselines(loaded, data, input_ids, options)
    report["bits_per_byte"] = _with_compressor_rows(model_bits_per_byte(loaded.family, result), report)
    report["seconds"] = round(time.time() - started, 2)
    return report


def load_inputs(options: ReportOptions) -> tuple[LoadedModel, EvaluationData]:
    """The model (eval mode, on its device) and what it is evaluated on, as `options` says.

    Checks what needs the model: document scoring refuses the autoencoder and oracle memory models before
    any data is read, and `stride` must fit the model's maximum length.
    """
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model_and_tokenizer(options.model, options.tokenizer, device)
    documents_mode = options.scoring == "documents"
    if documents_mode:
        max_length = causal_max_length(loaded.model)
        if options.stride is not None and not 1 <= options.stride <= max_length:
            raise ValueError(f"stride must be between 1 and the model's max length {max_length}, got {options.stride}")
    split_defaults = split_settings_for(options.data, loaded.run_config)
    data = load_evaluation_data(
        options.data, loaded.tokenizer, loaded.model.config.max_sequence_length, split=options.split,
        validation_fraction=split_defaults["validation_fraction"] if options.validation_fraction is None
        else options.validation_fraction,
        split_seed=split_defaults["split_seed"] if options.split_seed is None else options.split_seed,
        text_column=options.text_column, hub_split=options.hub_split, max_documents=options.max_documents,
        max_windows=options.max_windows, max_primer_bytes=options.max_primer_bytes or None, pack=not documents_mode,
        train_fraction=split_defaults["train_fraction"] if options.train_fraction is None else options.train_fraction,
    )
    return loaded, data


def create_report(options: ReportOptions) -> dict:
    """Load and measure; returns the report dict (no files written)."""
    loaded, data = load_inputs(options)
    return build_report(loaded, data, options.evaluator, options.scoring)


def write_plots(report: dict, out: Path, training_log: str | None) -> list[str]:
    """PNG charts next to the report; returns their file names."""
    from evaluation.plots import (
        plot_bits_per_byte,
        plot_chunk_losses,
        plot_training_curves,
        plot_window_positions,
    )

    paths = [plot_bits_per_byte(report["bits_per_byte"], out / "bits_per_byte.png",
                                model_names=[k for k in report["bits_per_byte"] if k.startswith("memmix")])]
    if report["family"] == "memory" and "per_chunk" in report["results"]:
        per_chunk = report["results"]["per_chunk"]
        lines = {label.replace("_", " "): [c["cross_entropy"] for c in chunks] for label, chunks in per_chunk.items()}
        paths.append(plot_chunk_losses(lines, out / "chunk_losses.png"))
    if report["family"] == "autoencoder" and report["results"].get("per_position"):
        paths.append(plot_window_positions(report["results"]["per_position"], out / "window_positions.png"))
    if training_log:
        paths.append(plot_training_curves(training_log, out / "training_curves.png"))
    return [path.name for path in paths]


def _write_json(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def write_report(report: dict, out: str | Path, training_log: str | None = None) -> dict:
    """Write report.json, report.md and the PNG charts to `out` (created); adds ``plots`` to the report."""
    from evaluation.markdown import render_markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_plots(report, out, training_log)
    _write_json(report, out)
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def run(options: ReportOptions) -> dict:
    """Load, evaluate, write report.md / report.json / PNGs to ``options.output_folder`` and, with
    ``update_model_card``, the report's numbers into the model folder's card; returns the report dict."""
    loaded, data = load_inputs(options)
    report = build_report(loaded, data, options.evaluator, options.scoring)
    out = options.output_folder
    write_report(report, out, options.training_log)
    if options.update_model_card:
        from evaluation.model_card import update_model_card

        if loaded.local_folder is None:
            raise ValueError("--update_model_card needs a local model folder, not a Hub id")
        report["model_card"] = str(update_model_card(loaded.local_folder, report))
        _write_json(report, out)
    return report


def run_report(model: str, data: str = "builtin", out: str | Path = "reports/report", **settings: Any) -> dict:
    """`run` with the options as keywords (`ReportOptions` fields: ``max_windows=50``, ``scoring=...``)."""
    return run(ReportOptions(model=model, data=data, out=out, **settings))


__all__ = [
    "build_document_report",
    "build_report",
    "config_summary",
    "create_report",
    "load_inputs",
    "model_bits_per_byte",
    "run",
    "run_report",
    "write_plots",
    "write_report",
]
