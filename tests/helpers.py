"""Helpers shared by the training tests (test_training, test_finetune, test_distributed): a fresh accelerate
state per test, a small shared tokenizer, tiny run presets and readers of a run's ``metrics.jsonl``.

Tiny *model* configs of every architecture variant live in ``tests/variants.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from accelerate.state import AcceleratorState, GradientState

from memmix_data import builtin_documents, train_tokenizer

# hidden 32, 2 layers, n_ctx 16: a step takes milliseconds on one CPU thread
TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "n_ctx": 16, "intermediate_size": 64}
# a few steps of a small batch, a loss record every step, no TensorBoard
TINY_TRAIN = {"batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "max_steps": 6, "log_every": 1, "tensorboard": False}


def reset_accelerate_state() -> None:
    """Forget accelerate's per-process singleton state, as a new process would start without it (each run builds
    its own Accelerator, and mixed precision differs between runs)."""
    AcceleratorState._reset_state()
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Autouse in every test module that imports it: a fresh accelerate state around each test."""
    reset_accelerate_state()
    yield
    reset_accelerate_state()


def train_small_tokenizer(root: Path) -> dict[str, str]:
    """A 300-token tokenizer trained on 150 built-in documents in ``root/tokenizer``, and a window cache folder
    ``root/cache``: the ``data.tokenizer`` / ``data.cache_dir`` of the tiny runs."""
    train_tokenizer(builtin_documents()[:150], vocab_size=300, save_dir=str(root / "tokenizer"))
    return {"tokenizer": str(root / "tokenizer"), "cache_dir": str(root / "cache")}


def builtin_data(shared: dict[str, str], validation_fraction: float = 0.1) -> dict[str, Any]:
    """The ``data`` section of a tiny run on the first 150 built-in documents with the shared tokenizer."""
    return {"corpus": "builtin", "max_documents": 150, "tokenizer": shared["tokenizer"],
            "cache_dir": shared["cache_dir"], "validation_fraction": validation_fraction}


def tiny_preset(family: str, model: dict[str, Any], data: dict[str, Any], output_dir, **train) -> dict[str, Any]:
    """A raw preset (what a configuration/*.json file holds): the given sections, ``TINY_TRAIN`` under ``train``."""
    return {"family": family, "model": dict(model), "data": dict(data),
            "train": {"output_dir": str(output_dir), **TINY_TRAIN, **train}}


def read_log(output_dir) -> list[dict]:
    """Every record of the run's ``metrics.jsonl``."""
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(output_dir) -> dict[int, float]:
    """Step -> logged train loss of a run."""
    return {r["step"]: r["train_loss"] for r in read_log(output_dir) if "train_loss" in r}
