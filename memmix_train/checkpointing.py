"""Resumable training checkpoints, written so that an interrupted save never looks valid.

A checkpoint is a folder ``<output_dir>/checkpoints/step_000040`` holding ``accelerator.save_state``
output (model, optimizer, scheduler, RNG states), ``trainer_state.json`` (step and data position),
``run_config.json`` (the resolved configuration) and, written last, the marker file ``COMPLETE``.
Everything is first written to ``.tmp-step_000040`` and renamed into place only after the marker
exists, so a crash during the save leaves at most a ``.tmp-*`` folder, which is ignored and removed
by the next save. `find_resume_checkpoint` picks the checkpoint a run continues from and refuses one of another
model. Exported models (``save_pretrained``) are separate; see `memmix_train.export`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from .config import RunConfig, save_config, train_default

COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "run_config.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def is_complete(path: str | os.PathLike) -> bool:
    """True when the folder is a finished checkpoint (its marker and trainer state exist)."""
    path = Path(path)
    return (path / COMPLETE_MARKER).is_file() and (path / STATE_FILE).is_file()


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and is_complete(child):
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def _write_marker(path: Path) -> None:
    (path / COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    step: int,
    trainer_state: dict[str, Any],
    run_config: RunConfig | dict[str, Any],
    keep: int = 2,
) -> Path:
    """Save a resumable checkpoint atomically; every process must call this (sharded states)."""
    root = checkpoint_root(output_dir)
    final = root / step_dir_name(step)
    temporary = root / f".tmp-{step_dir_name(step)}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
        save_config(run_config, temporary / CONFIG_FILE)
        _write_marker(temporary)
        if final.exists():  # a checkpoint of the same step from an earlier attempt
            shutil.rmtree(final)
        os.replace(temporary, final)
        for old in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> dict[str, Any]:
    """Restore model/optimizer/scheduler/RNG from a finished checkpoint; returns its trainer state."""
    path = Path(path)
    if not is_complete(path):
        raise ValueError(
            f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} marker or {STATE_FILE}); "
            "it was probably interrupted while saving"
        )
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))


# train keys a resumed run must share with its checkpoint (they decide which weights the state holds)
FINE_TUNE_KEYS = ("init_from", "lora_rank", "lora_alpha", "lora_dropout", "lora_adapt_mixing", "lora_decoder_only")


def find_resume_checkpoint(config: RunConfig, accelerator: Accelerator, log_file: str) -> Path | None:
    """The checkpoint to resume from (train.resume: auto / never / a folder), checked against this run: the same
    family, model and data settings and the same fine-tuning keys. For 'never' the old checkpoints and the
    metrics log ``log_file`` are removed."""
    train = config.train
    output_dir = Path(train.output_dir)
    if train.resume == "never":
        if accelerator.is_main_process:
            shutil.rmtree(checkpoint_root(output_dir), ignore_errors=True)
            (output_dir / log_file).unlink(missing_ok=True)
        accelerator.wait_for_everyone()
        return None
    path = latest_checkpoint(output_dir) if train.resume == "auto" else Path(train.resume)
    if path is None:
        return None
    saved, current = read_checkpoint_config(path), config.to_dict()
    for section in ("family", "model", "data"):
        if saved[section] != current[section]:
            raise ValueError(
                f"Cannot resume from {path}: its {section} settings differ from this run's "
                f"({saved[section]!r} vs {current[section]!r}); use another train.output_dir or --resume never"
            )
    for key in FINE_TUNE_KEYS:
        before = saved["train"].get(key, train_default(key))
        if before != current["train"][key]:
            raise ValueError(
                f"Cannot resume from {path}: it was trained with train.{key}={before!r}, this run asks for "
                f"{current['train'][key]!r}; use another train.output_dir or --resume never"
            )
    return path
