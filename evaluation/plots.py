"""PNG charts for memmix evaluation reports (matplotlib, Agg backend: works without a display).

- `plot_bits_per_byte`: models against classical compressors, one horizontal bar each, lower is better.
- `plot_chunk_losses`: a memory model's loss at each chunk position, e.g. with memory vs without.
- `plot_window_positions`: an autoencoder's accuracy and reconstruction CE at each position of its window.
- `plot_training_curves`: train/validation loss and validation bits per byte from a JSON-lines log.

Every function writes the PNG (creating parent folders) and returns its path.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
from matplotlib.ticker import MaxNLocator  # noqa: E402

COMPRESSOR_NAMES = ("gzip", "bzip2", "xz", "zstd", "brotli")
MODEL_COLOR = "tab:blue"
COMPRESSOR_COLOR = "tab:gray"
DPI = 120


def _is_compressor_label(label: str) -> bool:
    """True for labels such as "xz", "zstd (stream)" or "brotli/primed"."""
    first_word = label.replace("(", " ").replace("/", " ").replace(":", " ").split()[0].lower()
    return first_word in COMPRESSOR_NAMES


def _save(figure, path: str | Path) -> Path:
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return output


def plot_bits_per_byte(
    results: Mapping[str, float],
    path: str | Path,
    title: str = "Bits per byte (lower is better)",
    model_names: Iterable[str] | None = None,
) -> Path:
    """Horizontal bar chart of bits per byte, best (lowest) at the top, each value written on its bar.

    Args:
        results: label -> bits per byte, e.g. ``{"memmix-1k": 1.21, "xz (stream)": 2.4}``.
        path: PNG file to write.
        title: chart title.
        model_names: labels drawn in the model colour; by default every label that does not start
            with a compressor name (gzip, bzip2, xz, zstd, brotli).
    """
    if not results:
        raise ValueError("results is empty; nothing to plot")
    for label, value in results.items():
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"results[{label!r}] must be a finite number, got {value!r}")
    models = set(model_names) if model_names is not None else None
    ordered = sorted(results.items(), key=lambda item: item[1], reverse=True)  # barh draws bottom-up
    labels = [label for label, _ in ordered]
    values = [float(value) for _, value in ordered]
    is_model = [
        label in models if models is not None else not _is_compressor_label(label) for label in labels
    ]
    colors = [MODEL_COLOR if model else COMPRESSOR_COLOR for model in is_model]

    figure, axes = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.5))
    bars = axes.barh(labels, values, color=colors)
    axes.bar_label(bars, labels=[f"{value:.3f}" for value in values], padding=3)
    axes.set_xlabel("bits per byte (lower is better)")
    axes.set_xlim(0, max(max(values), 0) * 1.15 + 1e-9)
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def plot_chunk_losses(
    per_chunk: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "Loss by chunk position",
    ylabel: str = "cross-entropy (nats/token)",
) -> Path:
    """Line chart of loss against chunk position (1 = first chunk), one line per label.

    Args:
        per_chunk: label -> loss at each chunk position, e.g.
            ``{"with memory": [3.1, 2.6, 2.4], "without memory": [3.1, 3.1, 3.0]}``.
        path: PNG file to write.
    """
    if not per_chunk:
        raise ValueError("per_chunk is empty; nothing to plot")
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, losses in per_chunk.items():
        if len(losses) == 0:
            raise ValueError(f"per_chunk[{label!r}] is empty; need one loss per chunk position")
        positions = range(1, len(losses) + 1)
        axes.plot(positions, list(losses), marker="o", label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("chunk position")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_window_positions(per_position: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """The autoencoder's token accuracy and reconstruction CE at each position of the window (1 = first token)."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for axes, key, label in ((top, "token_accuracy", "token accuracy"),
                             (bottom, "cross_entropy", "reconstruction CE (nats)")):
        values = list(per_position[key])
        axes.plot(range(1, len(values) + 1), values)
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    top.set_ylim(0, 1.02)
    top.set_title("Regeneration by position in the window")
    bottom.set_xlabel("token position")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(figure, path)


def read_training_log(jsonl_path: str | Path) -> list[dict]:
    """Read a JSON-lines training log; every non-blank line must be a JSON object with a "step"."""
    records = []
    with open(jsonl_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{jsonl_path}:{line_number} is not valid JSON: {error}") from None
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError(
                    f"{jsonl_path}:{line_number} must be a JSON object with a 'step', got {line.strip()}"
                )
            records.append(record)
    return records


def _series(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """Steps and values of the records that carry `key`."""
    points = [(record["step"], record[key]) for record in records if record.get(key) is not None]
    return [step for step, _ in points], [value for _, value in points]


def plot_training_curves(jsonl_path: str | Path, path: str | Path, title: str = "Training") -> Path:
    """Train and validation loss against step, and validation bits per byte when the log has it.

    The log holds records such as ``{"step": 10, "train_loss": 3.2}`` and
    ``{"step": 100, "val_loss": 3.0, "val_bits_per_byte": 1.3}``; other keys are ignored.
    """
    records = read_training_log(jsonl_path)
    train_steps, train_loss = _series(records, "train_loss")
    val_steps, val_loss = _series(records, "val_loss")
    bpb_steps, val_bpb = _series(records, "val_bits_per_byte")
    if not train_loss and not val_loss:
        raise ValueError(f"{jsonl_path} has no 'train_loss' or 'val_loss' records to plot")

    panels = 2 if val_bpb else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    loss_axes = axes[0][0]
    if train_loss:
        loss_axes.plot(train_steps, train_loss, label="train loss", alpha=0.8)
    if val_loss:
        loss_axes.plot(val_steps, val_loss, marker="o", label="validation loss")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("cross-entropy (nats/token)")
    loss_axes.set_title(f"{title}: loss")
    loss_axes.grid(alpha=0.3)
    loss_axes.legend()
    if val_bpb:
        bpb_axes = axes[0][1]
        bpb_axes.plot(bpb_steps, val_bpb, marker="o", color="tab:green")
        bpb_axes.set_xlabel("step")
        bpb_axes.set_ylabel("bits per byte")
        bpb_axes.set_title(f"{title}: validation bits per byte")
        bpb_axes.grid(alpha=0.3)
    return _save(figure, path)
