"""Run configuration: a preset file from ``configuration/`` plus ``--set section.key=value`` overrides.

A preset is a JSON object with four parts::

    {"family": "autoencoder",                 # mixer | autoencoder | memory
     "model": {"hidden_size": 64, ...},       # fields of the family's config class
     "data":  {"corpus": "builtin", ...},     # see DATA_DEFAULTS
     "train": {"lr": 0.002, ...}}             # see TRAIN_DEFAULTS

Missing ``data`` / ``train`` keys take the defaults below; unknown keys are errors, so a typo never
passes silently. An override is ``section.key=value`` (or a bare ``key=value`` when the key exists in one
section only); the value is read as JSON when it parses (``1e-3``, ``true``, ``null``, ``[0.9, 0.95]``)
and as a plain string otherwise. The resolved configuration is what every checkpoint and export stores.

Fine-tuning (see docs/LORA.md): ``train.init_from`` is an exported model folder (or Hub id) whose weights the
run starts from; the preset's ``model`` keys must then equal the checkpoint's (the others are taken from it).
``train.lora_rank`` (with ``init_from``) trains LoRA adapters instead of every weight.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

from modeling_memmix import MemoryMixerConfig, MixerAutoencoderConfig, MixerConfig

FAMILY_CONFIGS = {"mixer": MixerConfig, "autoencoder": MixerAutoencoderConfig, "memory": MemoryMixerConfig}
SECTIONS = ("model", "data", "train")

DATA_DEFAULTS: dict[str, Any] = {
    "corpus": "builtin",  # "builtin", local .txt/.jsonl/.parquet paths or globs, or a Hub dataset id
    "text_column": "text",
    "hub_split": "train",
    "max_documents": None,  # read only the first N documents (quick runs)
    "validation_fraction": 0.05,
    "split_seed": 0,
    "tokenizer": None,  # folder of an existing tokenizer; None = train one (saved in output_dir/tokenizer)
    "vocab_size": 8000,  # size of a newly trained tokenizer
    "cache_dir": "runs/cache",  # packed windows are cached here and reused
}

TRAIN_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs/run",
    "seed": 0,
    "batch_size": 8,  # windows per process per micro-step
    "grad_accum": 1,  # micro-steps per optimizer step
    "lr": 1e-3,
    "weight_decay": 0.01,
    "betas": [0.9, 0.95],
    "warmup_steps": 20,
    "max_steps": 200,  # length of the schedule (optimizer steps)
    "max_minutes": None,  # wall-clock budget; the run saves, evaluates and exports when it is spent
    "stop_after_steps": None,  # stop this invocation after N steps (checkpoint kept); schedule unchanged
    "grad_clip": 1.0,  # max gradient norm; None or 0 disables clipping
    "mixed_precision": "no",  # no | bf16 | fp16 (fp16 needs a GPU)
    "cpu": False,  # force CPU even when a GPU is present
    "eval_every": 50,
    "eval_batches": None,  # None = the whole validation split
    "log_every": 10,
    "save_every": 50,
    "keep_checkpoints": 2,
    "resume": "auto",  # auto (latest complete checkpoint in output_dir), never, or a checkpoint folder
    "tensorboard": True,
    "init_from_autoencoder": None,  # memory family: exported autoencoder folder whose encoder is reused
    "freeze_encoder": True,  # with init_from_autoencoder
    "init_from": None,  # exported model folder (save_pretrained output) or Hub id to fine-tune from
    "lora_rank": None,  # LoRA adapters of this rank on the init_from model (None = train every weight)
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lora_adapt_mixing": False,  # also adapt the token-mixing matrices (under the causal mask)
    "lora_decoder_only": False,  # memory family: decoder side only (memmix_peft.memory_lora_config)
    "lora_merge": False,  # also export the merged full model to export/ (the adapter goes to export/adapter/)
    "push_to_hub": None,  # repo id to upload the export to
    "hub_private": False,
    "debug_nan_at_step": None,  # test hook: make the loss NaN at this step
}

MIXED_PRECISION = ("no", "bf16", "fp16")
RESUME_WORDS = ("auto", "never")


def config_fields(family: str) -> set[str]:
    """Field names the family's model config accepts."""
    check_family(family)
    return {field.name for field in dataclasses.fields(FAMILY_CONFIGS[family])}


def check_family(family: str) -> None:
    if family not in FAMILY_CONFIGS:
        raise ValueError(f"family={family!r} is not supported; choose one of {list(FAMILY_CONFIGS)}")


def load_preset(path: str | os.PathLike) -> dict[str, Any]:
    """Read a preset file and return it resolved (defaults filled in, every key checked)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Preset file {path!s} does not exist (presets live in configuration/*.json)")
    with open(path, encoding="utf-8") as handle:
        try:
            raw = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"Preset {path!s} is not valid JSON: {error}") from None
    return resolve_config(raw, source=str(path))


def resolve_config(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Fill defaults into a raw preset and check every section and key."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: a preset must be a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - {"family", *SECTIONS}
    if unknown:
        raise ValueError(f"{source}: unknown top-level keys {sorted(unknown)}; allowed: family, {', '.join(SECTIONS)}")
    family = raw.get("family")
    if family is None:
        raise ValueError(f"{source}: missing 'family' (one of {list(FAMILY_CONFIGS)})")
    check_family(family)
    resolved = {
        "family": family,
        "model": dict(raw.get("model", {})),
        "data": {**DATA_DEFAULTS, **raw.get("data", {})},
        "train": {**TRAIN_DEFAULTS, **raw.get("train", {})},
    }
    check_keys(resolved, source)
    return resolved


def _allowed_keys(config: dict[str, Any]) -> dict[str, set[str]]:
    return {"model": config_fields(config["family"]), "data": set(DATA_DEFAULTS), "train": set(TRAIN_DEFAULTS)}


def check_keys(config: dict[str, Any], source: str = "config") -> None:
    """Raise ValueError for a key no section knows, and for values outside their choices."""
    for section, allowed in _allowed_keys(config).items():
        unknown = set(config[section]) - allowed
        if unknown:
            raise ValueError(
                f"{source}: unknown {section} keys {sorted(unknown)}; known {section} keys: {sorted(allowed)}"
            )
    train = config["train"]
    if train["mixed_precision"] not in MIXED_PRECISION:
        raise ValueError(f"train.mixed_precision={train['mixed_precision']!r}; choose one of {list(MIXED_PRECISION)}")
    for name in ("batch_size", "grad_accum", "max_steps", "eval_every", "log_every", "save_every", "keep_checkpoints"):
        value = train[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"train.{name}={value!r} must be a positive integer")
    if not isinstance(train["warmup_steps"], int) or isinstance(train["warmup_steps"], bool) or train["warmup_steps"] < 0:
        raise ValueError(f"train.warmup_steps={train['warmup_steps']!r} must be an integer >= 0")
    if not isinstance(train["lr"], (int, float)) or train["lr"] <= 0:
        raise ValueError(f"train.lr={train['lr']!r} must be a positive number")
    check_fine_tuning(config)


LORA_SWITCHES = ("lora_adapt_mixing", "lora_decoder_only", "lora_merge")


def check_fine_tuning(config: dict[str, Any]) -> None:
    """Raise ValueError for init_from / LoRA settings that cannot work together."""
    train = config["train"]
    if train["init_from"] is not None and train["init_from_autoencoder"] is not None:
        raise ValueError(
            f"train.init_from={train['init_from']!r} and train.init_from_autoencoder="
            f"{train['init_from_autoencoder']!r} are both set; a run starts from one of them"
        )
    for name in LORA_SWITCHES:
        if not isinstance(train[name], bool):
            raise ValueError(f"train.{name}={train[name]!r} must be true or false")
    rank = train["lora_rank"]
    if rank is None:
        switched_on = [name for name in LORA_SWITCHES if train[name]]
        if switched_on:
            raise ValueError(f"train.{switched_on[0]}=true needs LoRA; set train.lora_rank (e.g. 8)")
        return
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"train.lora_rank={rank!r} must be a positive integer (or null for no LoRA)")
    if train["init_from"] is None:
        raise ValueError(
            f"train.lora_rank={rank} needs train.init_from: LoRA adapts a trained checkpoint (an exported model "
            "folder such as runs/mixer_tiny/export)"
        )
    if not isinstance(train["lora_alpha"], (int, float)) or train["lora_alpha"] <= 0:
        raise ValueError(f"train.lora_alpha={train['lora_alpha']!r} must be a positive number")
    if not isinstance(train["lora_dropout"], (int, float)) or not 0 <= train["lora_dropout"] < 1:
        raise ValueError(f"train.lora_dropout={train['lora_dropout']!r} must be in [0, 1)")
    if train["lora_decoder_only"] and config["family"] != "memory":
        raise ValueError(f"train.lora_decoder_only=true is for family='memory', got family={config['family']!r}")


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists, objects), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _locate(config: dict[str, Any], key: str) -> tuple[str, str]:
    """(section, name) of an override key: ``section.name``, or a bare name known to exactly one section."""
    allowed = _allowed_keys(config)
    if "." in key:
        section, name = key.split(".", 1)
        if section not in allowed:
            raise ValueError(f"Override {key!r}: unknown section {section!r}; use one of {list(SECTIONS)}")
        if name not in allowed[section]:
            raise ValueError(f"Override {key!r}: {section} has no key {name!r}; known: {sorted(allowed[section])}")
        return section, name
    owners = [section for section, names in allowed.items() if key in names]
    if not owners:
        raise ValueError(f"Override {key!r}: no section has this key; write section.key (sections: {list(SECTIONS)})")
    if len(owners) > 1:
        raise ValueError(f"Override {key!r} is ambiguous: it exists in {owners}; write e.g. {owners[0]}.{key}")
    return owners[0], key


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `config` with ``key=value`` overrides applied and checked."""
    result = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like section.key=value, e.g. train.lr=1e-3")
        key, text = item.split("=", 1)
        key = key.strip()
        if key == "family":
            check_family(text)
            result["family"] = text
            continue
        section, name = _locate(result, key)
        result[section][name] = parse_value(text)
    check_keys(result, source="overrides")
    return result


def save_config(config: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved configuration as indented JSON."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")
