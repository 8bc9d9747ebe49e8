"""The run's metrics: one JSON object per line in ``<output_dir>/metrics.jsonl`` (main process) and, optionally,
TensorBoard scalars through the accelerator. A resumed run first drops the lines a killed run wrote after the
checkpoint it resumes from, so the log reads as one uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from .config import RunConfig

LOG_FILE = "metrics.jsonl"


class MetricsLog:
    """JSON-lines metrics (main process) and, optionally, TensorBoard through the accelerator."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, resume_step: int, tensorboard: bool):
        self.accelerator, self.path, self.tensorboard = accelerator, Path(output_dir) / LOG_FILE, tensorboard
        if accelerator.is_main_process:
            self._truncate_after(resume_step)

    def _truncate_after(self, step: int) -> None:
        """Drop records a killed run wrote after the checkpoint we resume from."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.tensorboard:
            scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
            self.accelerator.log(scalars, step=record["step"])
        if self.accelerator.is_main_process:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


def flat_hparams(config: RunConfig) -> dict[str, Any]:
    """Scalar view of the config for TensorBoard's hparams (lists and None become strings)."""
    content = config.to_dict()
    flat = {"family": content["family"]}
    for section in ("model", "data", "train"):
        for key, value in content[section].items():
            flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
