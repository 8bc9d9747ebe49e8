"""The exported model folder (Hub-ready) and its upload.

`export_model` writes ``save_pretrained`` output (safetensors weights, config with ``auto_map`` and the
model code as remote code), the tokenizer, a generation config (causal families), the resolved run
configuration and a model card ``README.md`` whose YAML ``model-index`` carries the validation bits per
byte. `export_adapter` writes a LoRA run's adapter folder (PEFT ``adapter_config.json`` + weights, tokenizer,
card) and `export_merged` the full model with the adapter folded in. `push_folder_to_hub` uploads a folder
with ``huggingface_hub.upload_folder`` and fails with a clear message when the Hub cannot be reached (e.g.
``HF_HUB_OFFLINE=1``). `export_run` picks between them for a finished training run.

`model_card` and `fine_tuning_section` read the run configuration as stored (``RunConfig.to_dict()``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from memmix_hub import (
    BUILTIN_DATASET_NAME,
    HubUnreachableError,
    check_hub_reachable,
    eval_results,
    looks_like_hub_id,
    new_model_card,
)
from modeling_memmix.families import get_family

from .config import RunConfig, save_config


def _train_share_text(data: dict) -> str:
    """', trained on 50% of the training documents' when data.train_fraction cut them, else nothing."""
    share = data.get("train_fraction", 1.0)
    return "" if share == 1.0 else f"; trained on {100 * share:g}% of the training documents (data.train_fraction)"


def check_push_possible(repo_id: str, folder: str | os.PathLike | None = None) -> None:
    """Fail early, with the way out, when ``--push_to_hub`` cannot work because the Hub is switched off."""
    check_hub_reachable(repo_id, folder, advice=f"upload it later with `hf upload {repo_id} <export folder>` or "
                                                "rerun without --push_to_hub.")


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


def _parameters_row(metrics: dict[str, Any]) -> str:
    trainable, total = metrics.get("trainable_parameters"), metrics.get("total_parameters")
    if trainable is None or not total:
        return ""
    return f"| trainable parameters | {trainable:,} of {total:,} ({100 * trainable / total:.2f}%) |\n"


def fine_tuning_section(run_config: dict[str, Any]) -> str:
    """Card paragraph saying what the run started from and what it trained (empty for runs from scratch)."""
    train = run_config["train"]
    if train.get("init_from") is None:
        return ""
    if train.get("lora_rank") is None:
        method = "full fine-tuning (every weight trained)"
    else:
        parts = [f"LoRA rank {train['lora_rank']}", f"alpha {train['lora_alpha']}", f"dropout {train['lora_dropout']}",
                 "token-mixing matrices adapted under the causal mask" if train["lora_adapt_mixing"]
                 else "token-mixing matrices not adapted"]
        if train["lora_decoder_only"]:
            parts.append("decoder side only (encoder untouched)")
        method = ", ".join(parts) + " (targets from `memmix_peft`, see docs/LORA.md)"
    return f"\n## Fine-tuning\n\nStarted from `{train['init_from']}`; {method}.\n"


def _usage(family: str, model_name: str, base: str | None, adapter: bool) -> str:
    auto_class = get_family(family).auto_class
    if not adapter:
        return f"""```python
from transformers import {auto_class}, AutoTokenizer

model = {auto_class}.from_pretrained("{model_name}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{model_name}", trust_remote_code=True)
```"""
    return f"""This folder holds a LoRA adapter only; load it on its base model:

```python
from peft import PeftModel
from transformers import {auto_class}, AutoTokenizer

base = {auto_class}.from_pretrained("{base}", trust_remote_code=True)
model = PeftModel.from_pretrained(base, "{model_name}")
tokenizer = AutoTokenizer.from_pretrained("{model_name}", trust_remote_code=True)
```"""


def model_card(run_config: dict[str, Any], metrics: dict[str, Any], model_name: str, adapter: bool = False) -> str:
    """Model card text: YAML front matter with a model-index, then usage and the training setup.

    ``adapter=True`` describes a LoRA adapter folder (PEFT library, usage on the base model).
    """
    family = run_config["family"]
    base = run_config["train"].get("init_from")
    corpus = run_config["data"]["corpus"]
    corpus_label = ", ".join(_corpus_names(corpus))
    if corpus_label == "builtin":
        corpus_label = BUILTIN_DATASET_NAME
    bpb = metrics.get("val_bits_per_byte")
    hub_ids = _hub_dataset_ids(corpus)
    validation = [(kind, metrics[key], name) for key, kind, name in (
        ("val_bits_per_byte", "bits_per_byte", "Validation bits per byte"),
        ("val_loss", "loss", "Validation loss (nats/token)")) if metrics.get(key) is not None]
    results = eval_results(get_family(family).task, corpus_label, hub_ids[0] if hub_ids else "text", "validation",
                           validation, decimals=4, pad_decimals=True)
    title = get_family(family).description
    what = f"LoRA adapter for a {title}" if adapter else title
    body = f"""
# {model_name}

A {what} from the memmix project, trained with `train_accelerate.py`.

## Use

{_usage(family, model_name, base, adapter)}

## Results

| measure | value |
|---|---|
| validation bits per byte | {"n/a" if bpb is None else f"{bpb:.4f}"} |
| validation loss (nats/token) | {metrics.get("val_loss", "n/a") if metrics.get("val_loss") is None else f"{metrics['val_loss']:.4f}"} |
| optimizer steps | {metrics.get("step", "n/a")} |
| training windows seen | {metrics.get("train_windows", "n/a")} |
{_parameters_row(metrics)}
Bits per byte = summed validation cross-entropy (nats) / (ln 2 x bytes of the scored tokens); for causal
models the first token of each window has no prediction and its bytes are not counted.

## Training data

{corpus_label}; split into train/validation by document (validation fraction
{run_config["data"]["validation_fraction"]}){_train_share_text(run_config["data"])}.
{fine_tuning_section(run_config)}
## Training configuration

```json
{json.dumps(run_config, indent=2, sort_keys=True)}
```
"""
    card = new_model_card(model_name, body, eval_results=results,
                          library_name="peft" if adapter else "transformers", license="apache-2.0",
                          base_model=base if base is not None and looks_like_hub_id(base) else None,
                          tags=["memmix", "masked-mixer", family] + (["lora"] if adapter else []), datasets=hub_ids)
    return str(card)


def export_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run_config: RunConfig,
    metrics: dict[str, Any],
    folder: str | os.PathLike,
    state_dict: dict | None = None,
    model_name: str | None = None,
) -> Path:
    """Write the Hub-ready folder and return its path (``state_dict``: full weights of a sharded model)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, state_dict=state_dict)
    write_export_files(model.config, tokenizer, run_config, metrics, folder, model_name)
    return folder


def export_adapter(
    peft_model,
    tokenizer: PreTrainedTokenizerBase,
    run_config: RunConfig,
    metrics: dict[str, Any],
    folder: str | os.PathLike,
    state_dict: dict | None = None,
    model_name: str | None = None,
) -> Path:
    """Write a LoRA run's adapter folder: PEFT's ``adapter_config.json`` and adapter weights only (no base
    weights), the tokenizer, run configuration, metrics and an adapter model card; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(folder, state_dict=state_dict)
    write_export_files(peft_model.base_model.model.config, tokenizer, run_config, metrics, folder, model_name,
                       adapter=True)
    return folder


def export_merged(
    peft_model,
    tokenizer: PreTrainedTokenizerBase,
    run_config: RunConfig,
    metrics: dict[str, Any],
    folder: str | os.PathLike,
    model_name: str | None = None,
) -> PreTrainedModel:
    """Fold the adapter into the base weights (`memmix_peft.merge_and_export`, which modifies ``peft_model`` in
    place) and write the normal exported folder of the merged model; returns the merged model."""
    from memmix_peft import merge_and_export

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merged = merge_and_export(peft_model, folder, tokenizer)
    write_export_files(merged.config, tokenizer, run_config, metrics, folder, model_name)
    return merged


def write_export_files(
    config,
    tokenizer: PreTrainedTokenizerBase,
    run_config: RunConfig,
    metrics: dict[str, Any],
    folder: Path,
    model_name: str | None = None,
    adapter: bool = False,
) -> None:
    """Everything of an exported folder except the weights: tokenizer, generation config (causal full models),
    run configuration, metrics and model card."""
    tokenizer.save_pretrained(folder)
    if run_config.family_entry.causal and not adapter:
        GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            # no max_length: every generate(max_new_tokens=...) call would warn that both are set; the model's
            # own limit (config.max_sequence_length) is enforced by generate() before any work
        ).save_pretrained(folder)
    save_config(run_config, folder / "run_config.json")
    (folder / "eval_results.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    name = run_config.train.push_to_hub or model_name or folder.name
    (folder / "README.md").write_text(model_card(run_config.to_dict(), metrics, name, adapter=adapter),
                                      encoding="utf-8")


def export_run(model, tokenizer: PreTrainedTokenizerBase, config: RunConfig, metrics: dict[str, Any],
               export_folder: Path, state_dict: dict, lora: bool) -> None:
    """Write a finished run's export (main process): the model, or for LoRA the adapter in ``adapter/`` and,
    with ``train.lora_merge``, the merged model in the export folder itself."""
    name = Path(config.train.output_dir).name
    if not lora:
        export_model(model, tokenizer, config, metrics, export_folder, state_dict=state_dict, model_name=name)
        return
    export_adapter(model, tokenizer, config, metrics, export_folder / "adapter", state_dict=state_dict,
                   model_name=name)
    if config.train.lora_merge:
        export_merged(model, tokenizer, config, metrics, export_folder, model_name=name)


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Upload the exported folder to ``repo_id``; returns the commit URL."""
    check_push_possible(repo_id, folder)
    from huggingface_hub import create_repo, upload_folder

    try:
        create_repo(repo_id, private=private, exist_ok=True)
        info = upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="memmix training export")
    except (OSError, ConnectionError) as error:
        raise HubUnreachableError(
            f"Could not upload {folder} to the Hugging Face Hub repo {repo_id!r}: {error}. The exported folder is "
            f"kept; check your network and `hf auth login`, then upload it with `hf upload {repo_id} {folder}`."
        ) from error
    return str(getattr(info, "commit_url", info))
