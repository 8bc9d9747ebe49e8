"""The exported model folder (Hub-ready) and its upload.

`export_model` writes ``save_pretrained`` output (safetensors weights, config with ``auto_map`` and the
model code as remote code), the tokenizer, a generation config (causal families), the resolved run
configuration and a model card ``README.md`` whose YAML ``model-index`` carries the validation bits per
byte. `push_folder_to_hub` uploads that folder with ``huggingface_hub.upload_folder`` and fails with a
clear message when the Hub cannot be reached (e.g. ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from .config import save_config

CAUSAL_FAMILIES = ("mixer", "memory")
FAMILY_TITLES = {
    "mixer": "causal masked-mixer language model",
    "autoencoder": "masked-mixer autoencoder",
    "memory": "masked-mixer memory model",
}
_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}


class HubOfflineError(ConnectionError):
    """Raised when --push_to_hub is asked for but the Hub cannot be reached."""


def hub_is_offline() -> bool:
    """True when the environment forbids Hub access (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(name, "").upper() in _OFFLINE_VALUES for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_reachable(repo_id: str, folder: str | os.PathLike | None = None) -> None:
    """Fail early, with the way out, when pushing is impossible because the Hub is switched off."""
    if hub_is_offline():
        where = f" The exported folder {folder} is kept;" if folder else ""
        raise HubOfflineError(
            f"Cannot push to the Hugging Face Hub repo {repo_id!r}: offline mode is on (HF_HUB_OFFLINE=1).{where}"
            f" upload it later with `hf upload {repo_id} <export folder>` or rerun without --push_to_hub."
        )


def _corpus_names(corpus: str | list[str]) -> list[str]:
    return [corpus] if isinstance(corpus, str) else list(corpus)


def _hub_dataset_ids(corpus: str | list[str]) -> list[str]:
    """Corpus specs that are Hub dataset ids (not 'builtin', not local files)."""
    names = []
    for spec in _corpus_names(corpus):
        if spec == "builtin" or os.path.exists(spec) or any(ch in spec for ch in "*?[") or "/" not in spec:
            continue
        names.append(spec.split(":", 1)[0])
    return names


def model_card(run_config: dict[str, Any], metrics: dict[str, Any], model_name: str) -> str:
    """Model card text: YAML front matter with a model-index, then usage and the training setup."""
    family = run_config["family"]
    corpus = run_config["data"]["corpus"]
    corpus_label = ", ".join(_corpus_names(corpus))
    if corpus_label == "builtin":
        corpus_label = "memmix built-in corpus (Python standard-library docstrings and pydoc topics)"
    bpb = metrics.get("val_bits_per_byte")
    task = "text-generation" if family in CAUSAL_FAMILIES else "feature-extraction"
    lines = ["---", "library_name: transformers", "license: apache-2.0", "tags:", "- memmix", "- masked-mixer",
             f"- {family}"]
    hub_ids = _hub_dataset_ids(corpus)
    if hub_ids:
        lines += ["datasets:"] + [f"- {name}" for name in hub_ids]
    lines += ["model-index:", f"- name: {model_name}", "  results:", "  - task:", f"      type: {task}",
              "    dataset:", f"      name: {json.dumps(corpus_label)}", f"      type: {json.dumps(hub_ids[0] if hub_ids else 'text')}",
              "      split: validation", "    metrics:"]
    if bpb is not None:
        lines += ["    - type: bits_per_byte", f"      value: {bpb:.4f}", "      name: Validation bits per byte"]
    if metrics.get("val_loss") is not None:
        lines += ["    - type: loss", f"      value: {metrics['val_loss']:.4f}", "      name: Validation loss (nats/token)"]
    lines.append("---")
    auto_class = "AutoModelForCausalLM" if family in CAUSAL_FAMILIES else "AutoModel"
    body = f"""
# {model_name}

A {FAMILY_TITLES[family]} from the memmix project, trained with `train_accelerate.py`.

## Use

```python
from transformers import {auto_class}, AutoTokenizer

model = {auto_class}.from_pretrained("{model_name}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{model_name}")
```

## Results

| measure | value |
|---|---|
| validation bits per byte | {"n/a" if bpb is None else f"{bpb:.4f}"} |
| validation loss (nats/token) | {metrics.get("val_loss", "n/a") if metrics.get("val_loss") is None else f"{metrics['val_loss']:.4f}"} |
| optimizer steps | {metrics.get("step", "n/a")} |
| training windows seen | {metrics.get("train_windows", "n/a")} |

Bits per byte = summed validation cross-entropy (nats) / (ln 2 x bytes of the scored tokens); for causal
models the first token of each window has no prediction and its bytes are not counted.

## Training data

{corpus_label}; split into train/validation by document (validation fraction
{run_config["data"]["validation_fraction"]}).

## Training configuration

```json
{json.dumps(run_config, indent=2, sort_keys=True)}
```
"""
    return "\n".join(lines) + "\n" + body


def export_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run_config: dict[str, Any],
    metrics: dict[str, Any],
    folder: str | os.PathLike,
    state_dict: dict | None = None,
    model_name: str | None = None,
) -> Path:
    """Write the Hub-ready folder and return its path (``state_dict``: full weights of a sharded model)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, state_dict=state_dict)
    tokenizer.save_pretrained(folder)
    if run_config["family"] in CAUSAL_FAMILIES:
        config = model.config
        GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            max_length=getattr(config, "max_sequence_length", config.n_ctx),
        ).save_pretrained(folder)
    save_config(run_config, folder / "run_config.json")
    (folder / "eval_results.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    name = run_config["train"].get("push_to_hub") or model_name or folder.name
    (folder / "README.md").write_text(model_card(run_config, metrics, name), encoding="utf-8")
    return folder


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Upload the exported folder to ``repo_id``; returns the commit URL."""
    check_hub_reachable(repo_id, folder)
    from huggingface_hub import create_repo, upload_folder

    try:
        create_repo(repo_id, private=private, exist_ok=True)
        info = upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="memmix training export")
    except (OSError, ConnectionError) as error:
        raise HubOfflineError(
            f"Could not upload {folder} to the Hugging Face Hub repo {repo_id!r}: {error}. The exported folder is "
            f"kept; check your network and `hf auth login`, then upload it with `hf upload {repo_id} {folder}`."
        ) from error
    return str(getattr(info, "commit_url", info))
