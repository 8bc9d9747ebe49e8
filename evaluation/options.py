"""Typed settings of an evaluation report: built once (from the command line or from Python), checked once.

- `ReportOptions`: everything `python -m evaluation.report` accepts (one field per flag, same names and
  defaults). Building one validates every field, and a bad value raises ``ValueError`` naming the option;
  checks that need the model (``stride`` against the model's maximum length) run when it is loaded.
- `EvaluatorOptions`: the part the evaluators read (batch size, formats, compressors, ...). The family
  evaluators also accept a plain dict with some of these keys (missing ones take the defaults), which is how
  benchmarks and tests call them.

From Python, without argparse::

    from evaluation.options import ReportOptions
    from evaluation.reporting import run

    report = run(ReportOptions(model="runs/mixer_tiny/export", out="reports/mixer_tiny", max_windows=50))
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.compressors import ALL_METHODS
from evaluation.loading import EVALUATION_SPLITS
from memmix_data import check_train_fraction
from modeling_memmix.quantization import EMBEDDING_FORMATS

DEFAULT_MAX_PRIMER_BYTES = 1_000_000
SCORING_MODES = ("windows", "documents")


def _check_choices(name: str, values: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f"{name} must be a list of names from {list(allowed)}, got the string {values!r}")
    unknown = [value for value in values if value not in allowed]
    if unknown:
        raise ValueError(f"{name}: {unknown} not among {list(allowed)}")
    return tuple(values)


def _check_at_least(name: str, value: int | None, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        limit = f">= {low}" + (" or None" if optional else "")
        raise ValueError(f"{name} must be an integer {limit}, got {value!r}")


@dataclass(frozen=True)
class EvaluatorOptions:
    """What the family evaluators, the trivial-encoding test and the compressor baselines read."""

    batch_size: int = 8
    progress: bool = True
    embedding_formats: tuple[str, ...] = EMBEDDING_FORMATS
    compressors: tuple[str, ...] = ALL_METHODS
    max_primer_bytes: int | None = DEFAULT_MAX_PRIMER_BYTES
    trivial_windows: int = 16
    copy_windows: int = 16
    seed: int = 0
    stride: int | None = None  # document scoring only

    def __post_init__(self) -> None:
        _check_at_least("batch_size", self.batch_size, 1)
        object.__setattr__(self, "embedding_formats",
                           _check_choices("embedding_formats", self.embedding_formats, EMBEDDING_FORMATS))
        object.__setattr__(self, "compressors", _check_choices("compressors", self.compressors, ALL_METHODS))
        _check_at_least("max_primer_bytes", self.max_primer_bytes, 0, optional=True)
        _check_at_least("trivial_windows", self.trivial_windows, 1)
        _check_at_least("copy_windows", self.copy_windows, 1)
        _check_at_least("stride", self.stride, 1, optional=True)

    @classmethod
    def coerce(cls, options: EvaluatorOptions | Mapping | None) -> EvaluatorOptions:
        """`options` as is, or built from a dict of some of the fields (unknown keys raise ValueError)."""
        if isinstance(options, EvaluatorOptions):
            return options
        options = dict(options or {})
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown evaluator options {unknown}; known: {sorted(known)}")
        return cls(**options)


@dataclass(frozen=True)
class ReportOptions:
    """Every setting of one report; the fields are the command's flags (``--max_windows`` is `max_windows`).

    `out` None means ``reports/<model folder name>`` (`output_folder`). `validation_fraction`, `split_seed` and
    `train_fraction` None mean the training run's (its ``run_config.json``) when it used the same `data`, else
    0.05, 0 and 1 (`train_fraction` picks the share of the train split a ``data.train_fraction`` run saw). ``max_primer_bytes=0`` (or None) skips the primed compressor setting.
    """

    model: str
    data: str = "builtin"
    out: str | Path | None = None
    tokenizer: str | None = None
    split: str = "validation"
    scoring: str = "windows"
    stride: int | None = None
    device: str | None = None
    batch_size: int = 8
    max_windows: int | None = None
    max_documents: int | None = None
    validation_fraction: float | None = None
    split_seed: int | None = None
    train_fraction: float | None = None
    text_column: str = "text"
    hub_split: str = "train"
    max_primer_bytes: int | None = DEFAULT_MAX_PRIMER_BYTES
    compressors: tuple[str, ...] = ALL_METHODS
    embedding_formats: tuple[str, ...] = EMBEDDING_FORMATS
    trivial_windows: int = 16
    copy_windows: int = 16
    seed: int = 0
    training_log: str | None = None
    update_model_card: bool = False
    progress: bool = True
    evaluator: EvaluatorOptions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a saved model folder or a Hub id, got {self.model!r}")
        if self.split not in EVALUATION_SPLITS:
            raise ValueError(f"split must be one of {EVALUATION_SPLITS}, got {self.split!r}")
        if self.scoring not in SCORING_MODES:
            raise ValueError(f"scoring must be one of {SCORING_MODES}, got {self.scoring!r}")
        if self.stride is not None and self.scoring != "documents":
            raise ValueError(f"stride={self.stride} applies to scoring='documents' only (got scoring={self.scoring!r})")
        if self.max_windows is not None and self.scoring == "documents":
            raise ValueError(f"max_windows={self.max_windows} limits packed windows; with scoring='documents' use "
                             "max_documents")
        _check_at_least("max_windows", self.max_windows, 1, optional=True)
        _check_at_least("max_documents", self.max_documents, 1, optional=True)
        if self.validation_fraction is not None and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be between 0 and 1 (exclusive) or None, "
                             f"got {self.validation_fraction!r}")
        _check_at_least("split_seed", self.split_seed, 0, optional=True)
        if self.train_fraction is not None:
            check_train_fraction(self.train_fraction)
        # the evaluators' part, checked by EvaluatorOptions (which names the field)
        evaluator = EvaluatorOptions(
            batch_size=self.batch_size, progress=self.progress, embedding_formats=self.embedding_formats,
            compressors=self.compressors, max_primer_bytes=self.max_primer_bytes,
            trivial_windows=self.trivial_windows, copy_windows=self.copy_windows, seed=self.seed, stride=self.stride,
        )
        object.__setattr__(self, "embedding_formats", evaluator.embedding_formats)
        object.__setattr__(self, "compressors", evaluator.compressors)
        object.__setattr__(self, "evaluator", evaluator)

    @property
    def output_folder(self) -> Path:
        """`out`, or ``reports/<model folder name>``."""
        if self.out is not None:
            return Path(self.out)
        return Path("reports") / (Path(self.model.rstrip("/")).name or "report")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReportOptions:
        """Options from the parsed command line (`evaluation.report.build_parser`): same names, except
        ``--no_progress`` which sets ``progress=False``."""
        values = vars(args).copy()
        values["progress"] = not values.pop("no_progress", False)
        names = {item.name for item in dataclasses.fields(cls) if item.init}
        return cls(**{name: value for name, value in values.items() if name in names})


__all__ = ["DEFAULT_MAX_PRIMER_BYTES", "SCORING_MODES", "EvaluatorOptions", "ReportOptions"]
