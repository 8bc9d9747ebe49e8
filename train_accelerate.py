"""Train any memmix family (causal mixer, autoencoder, memory model) with Accelerate, then export it.

On a laptop CPU (the README's main job; a few minutes on 2 cores)::

    python train_accelerate.py --preset configuration/mixer_tiny.json

Overrides (``section.key=value``; a bare key works when only one section has it)::

    python train_accelerate.py --preset configuration/autoencoder_tiny.json \\
        --set train.lr=1e-3 --set model.hidden_size=64 --max_steps 100 --output_dir runs/ae

Fine-tune an exported checkpoint on your own text, in full or with LoRA adapters (docs/LORA.md)::

    python train_accelerate.py --preset configuration/mixer_tiny.json --set train.init_from=runs/mixer_tiny/export \\
        --set data.corpus=my_text/*.txt --output_dir runs/my_finetune
    python train_accelerate.py --preset configuration/mixer_tiny_lora.json --set data.corpus=my_text/*.txt \\
        --set train.lora_rank=8 --set train.lora_merge=true

Several processes or GPUs (see configuration/accelerate/)::

    accelerate launch --config_file configuration/accelerate/cpu_2proc.yaml train_accelerate.py --preset ...

Flow: config -> tokenizer -> data -> model (`build_model`) -> optimizer -> resume -> loop (evaluate every
``train.eval_every`` steps, checkpoint every ``train.save_every``) -> final eval -> export (+ push).
Outputs under ``train.output_dir``: ``checkpoints/step_N`` (resumable), ``export/`` (Hub-ready folder),
``metrics.jsonl``, ``tensorboard/``, ``loss_curve.png``, ``run_config.json``.

Fine-tuning: ``train.init_from`` (an exported folder or Hub id) gives the starting weights; the preset's model keys
must equal the checkpoint's. A run from ``init_from`` evaluates once before its first step (logged as step 0).
With ``train.lora_rank`` the model is wrapped by ``peft.get_peft_model`` (targets from `memmix_peft`), only the
adapters train, the export is ``export/adapter/`` (adapter only) and, with ``train.lora_merge``, also the merged
full model in ``export/``. Every run logs its trainable-parameter count (step 0 of ``metrics.jsonl``).

Bits per byte are exact: summed validation cross-entropy in nats / (ln 2 x bytes of the scored tokens).
The causal families (mixer, memory) cannot score the first token of a window (nothing predicts it), so
its bytes are subtracted from the window's byte count; the autoencoder scores every token.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, set_seed
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_cosine_schedule_with_warmup,
)

from memmix_data import (
    PackedWindows,
    load_documents,
    load_or_build_windows,
    split_documents,
    token_byte_lengths,
)
from memmix_data.tokenizer import train_tokenizer
from memmix_peft import count_trainable_parameters, memory_lora_config, recommended_lora_config
from memmix_train.checkpointing import (
    is_complete,
    latest_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from memmix_train.config import FAMILY_CONFIGS, TRAIN_DEFAULTS, apply_overrides, load_preset, save_config
from memmix_train.export import (
    HubOfflineError,
    check_hub_reachable,
    export_adapter,
    export_merged,
    export_model,
    looks_like_hub_id,
    push_folder_to_hub,
)
from modeling_memmix import MemoryMixerForCausalLM, MixerAutoencoder, MixerAutoencoderConfig, MixerForCausalLM

FAMILY_MODELS = {"mixer": MixerForCausalLM, "autoencoder": MixerAutoencoder, "memory": MemoryMixerForCausalLM}
CAUSAL_FAMILIES = ("mixer", "memory")
LOG_FILE = "metrics.jsonl"
# train keys a resumed run must share with its checkpoint (they decide which weights the state holds)
FINE_TUNE_KEYS = ("init_from", "lora_rank", "lora_alpha", "lora_dropout", "lora_adapt_mixing", "lora_decoder_only")
# model keys a preset may leave null to have them filled in (from the tokenizer, or from an init_from checkpoint)
FILLED_MODEL_KEYS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stopped without saving the bad weights."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, help="preset JSON file, e.g. configuration/mixer_tiny.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override, e.g. --set train.lr=1e-3 --set model.hidden_size=64 (repeatable)")
    parser.add_argument("--output_dir", help="same as --set train.output_dir=...")
    parser.add_argument("--max_steps", type=int, help="same as --set train.max_steps=...")
    parser.add_argument("--max_minutes", type=float, help="wall-clock budget of this invocation")
    parser.add_argument("--resume", help="auto (default), never, or a checkpoint folder")
    parser.add_argument("--push_to_hub", metavar="REPO", help="upload the exported folder to this Hub repo")
    parser.add_argument("--print_config", action="store_true", help="print the resolved config and exit")
    return parser.parse_args(argv)


def resolve_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """Preset + --set overrides + the shortcut flags, checked."""
    overrides = list(args.overrides)
    for flag in ("output_dir", "max_steps", "max_minutes", "resume", "push_to_hub"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"train.{flag}={json.dumps(value) if not isinstance(value, str) else value}")
    return apply_overrides(load_preset(args.preset), overrides)


# ---------------------------------------------------------------------------------------------
# Tokenizer and data
# ---------------------------------------------------------------------------------------------


def tokenizer_source(config: dict[str, Any]) -> str | None:
    """Folder of an existing tokenizer to reuse: data.tokenizer, else the autoencoder's or the init_from
    checkpoint's, else None."""
    train = config["train"]
    return config["data"]["tokenizer"] or train["init_from_autoencoder"] or train["init_from"]


def prepare_tokenizer(config: dict[str, Any], accelerator: Accelerator) -> PreTrainedTokenizerBase:
    """Reuse a tokenizer folder, or train one on the training documents (main process) and save it."""
    source = tokenizer_source(config)
    if source is not None and source == config["train"]["init_from"] and looks_like_hub_id(source):
        return AutoTokenizer.from_pretrained(source)
    if source is not None:
        if not os.path.isfile(os.path.join(source, "tokenizer.json")):
            raise FileNotFoundError(f"No tokenizer.json in the tokenizer folder {source!r}")
        return AutoTokenizer.from_pretrained(source)
    folder = Path(config["train"]["output_dir"]) / "tokenizer"
    data = config["data"]
    with accelerator.main_process_first():
        if not (folder / "tokenizer.json").is_file():
            documents = load_documents(data["corpus"], text_column=data["text_column"], split=data["hub_split"],
                                       max_documents=data["max_documents"])
            train_docs, _ = split_documents(documents, data["validation_fraction"], data["split_seed"])
            train_tokenizer(train_docs, vocab_size=data["vocab_size"], save_dir=str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def window_length(model_config) -> int:
    """Tokens per training window: n_ctx, or n_ctx * (max_memories + 1) for the memory model."""
    return getattr(model_config, "max_sequence_length", model_config.n_ctx)


def prepare_windows(config: dict[str, Any], tokenizer, window: int, split: str,
                    accelerator: Accelerator) -> PackedWindows:
    data = config["data"]
    with accelerator.main_process_first():
        try:
            return load_or_build_windows(
                data["corpus"], tokenizer, window=window, split=split, cache_dir=data["cache_dir"],
                validation_fraction=data["validation_fraction"], seed=data["split_seed"],
                text_column=data["text_column"], hub_split=data["hub_split"], max_documents=data["max_documents"],
            )
        except ValueError as error:
            raise ValueError(
                f"Cannot build {split} windows of {window} tokens from corpus {data['corpus']!r}: {error}. "
                f"Use more text (data.max_documents={data['max_documents']}) or a shorter window (model.n_ctx)."
            ) from error


def check_windows_fit(windows: PackedWindows, model_config, global_batch: int, split: str) -> None:
    """Clear errors when the packed data does not match the model or the batch."""
    expected = window_length(model_config)
    if windows.window != expected:
        raise ValueError(f"{split} windows hold {windows.window} tokens but the model needs {expected}")
    top = int(windows.input_ids.max())
    if top >= model_config.vocab_size:
        raise ValueError(
            f"{split} data holds token id {top} but the model's vocab_size is {model_config.vocab_size}; "
            "the tokenizer and the model do not match"
        )
    if split == "train" and len(windows) < global_batch:
        raise ValueError(
            f"The train split has {len(windows)} windows of {windows.window} tokens, fewer than one global "
            f"micro-batch ({global_batch} = batch_size x processes); lower train.batch_size or use more data"
        )


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def model_settings(config: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The preset's model section with the tokenizer's vocabulary size and special ids filled in."""
    settings = dict(config["model"])
    vocab = len(tokenizer)
    given = settings.get("vocab_size")
    if given is not None and given < vocab:
        raise ValueError(f"model.vocab_size={given} is smaller than the tokenizer's {vocab} tokens")
    settings["vocab_size"] = given or vocab
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if settings.get(name) is None:
            settings[name] = tokenizer.eos_token_id
    return settings


def _init_from_hint(source: str) -> str:
    """What a folder that is not an exported model probably is, and what to give instead."""
    folder = Path(source)
    if (folder / "adapter_config.json").is_file():
        return (" It is a LoRA adapter folder: start from its base model, or from a merged export "
                "(train.lora_merge=true).")
    if is_complete(folder):
        return f" It is a training checkpoint: continue that run with --resume {source}, or start from its export/ folder."
    if (folder / "export" / "config.json").is_file():
        return f" Did you mean {folder / 'export'}?"
    return ""


def load_init_from_config(source: str):
    """The model config stored in the ``train.init_from`` folder (or Hub repo), with clear errors."""
    if not os.path.isdir(source) and not looks_like_hub_id(source):
        raise FileNotFoundError(
            f"train.init_from={source!r} is not a folder; give an exported model folder (save_pretrained output, "
            "e.g. runs/mixer_tiny/export) or a Hub model id"
        )
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        if not os.path.isdir(source):
            raise FileNotFoundError(
                f"train.init_from={source!r} is not a local folder and could not be loaded from the Hugging Face "
                f"Hub ({error}); give a local exported folder, or go online / set HF_HUB_OFFLINE=0"
            ) from error
        raise FileNotFoundError(
            f"train.init_from={source!r} holds no loadable model config ({error}).{_init_from_hint(source)}"
        ) from error


def init_from_model_config(config: dict[str, Any], tokenizer: PreTrainedTokenizerBase | None = None):
    """The config of the ``train.init_from`` checkpoint, checked against the run: same family, every model key the
    preset sets equal to the checkpoint's (the error lists each mismatch with both values), vocabulary big enough."""
    source, family = config["train"]["init_from"], config["family"]
    saved = load_init_from_config(source)
    expected = FAMILY_CONFIGS[family].model_type
    if saved.model_type != expected:
        raise ValueError(
            f"train.init_from={source!r} holds a {saved.model_type!r} model but family={family!r} needs "
            f"model_type {expected!r}; use the preset of the checkpoint's family"
        )
    mismatches = [
        f"{name}: checkpoint {getattr(saved, name, None)!r}, preset {wanted!r}"
        for name, wanted in config["model"].items()
        if not (wanted is None and name in FILLED_MODEL_KEYS) and getattr(saved, name, None) != wanted
    ]
    if mismatches:
        raise ValueError(
            f"train.init_from={source!r}: the checkpoint's config does not match the preset's model section "
            f"({'; '.join(mismatches)}). Remove these model keys from the preset (the checkpoint's values are used) "
            "or start from a checkpoint that has them"
        )
    if tokenizer is not None and len(tokenizer) > saved.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the checkpoint {source!r} has vocab_size="
            f"{saved.vocab_size}; use the checkpoint's tokenizer (data.tokenizer=null)"
        )
    return saved


def planned_model_config(config: dict[str, Any], tokenizer: PreTrainedTokenizerBase):
    """The model's config without building the model (to size the data windows first)."""
    if config["train"]["init_from"] is not None:
        return init_from_model_config(config, tokenizer)
    settings = model_settings(config, tokenizer)
    source = config["train"]["init_from_autoencoder"]
    if source is not None and config["family"] == "memory":
        settings.setdefault("n_ctx", MixerAutoencoderConfig.from_pretrained(source).n_ctx)
    return FAMILY_CONFIGS[config["family"]](**settings)


def build_model(config: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The model to train, from the resolved config (the single place where models are built).

    A memory model with ``train.init_from_autoencoder`` takes that autoencoder's encoder (frozen when
    ``train.freeze_encoder``). With ``train.init_from`` the checkpoint's model is loaded (after
    `init_from_model_config` checked it). PEFT wrappers are added after this function (`add_lora`).
    """
    family = config["family"]
    if config["train"]["init_from"] is not None:
        init_from_model_config(config, tokenizer)
        return FAMILY_MODELS[family].from_pretrained(config["train"]["init_from"])
    settings = model_settings(config, tokenizer)
    source = config["train"]["init_from_autoencoder"]
    if source is not None:
        if family != "memory":
            raise ValueError(f"train.init_from_autoencoder needs family='memory', got family={family!r}")
        autoencoder = MixerAutoencoder.from_pretrained(source)
        if autoencoder.config.vocab_size != settings["vocab_size"]:
            raise ValueError(
                f"The autoencoder in {source} has vocab_size={autoencoder.config.vocab_size} but the tokenizer "
                f"gives {settings['vocab_size']}; use the autoencoder's tokenizer (data.tokenizer=null)"
            )
        settings.pop("freeze_encoder", None)
        return MemoryMixerForCausalLM.from_autoencoder(autoencoder, freeze_encoder=config["train"]["freeze_encoder"],
                                                       **settings)
    return FAMILY_MODELS[family](FAMILY_CONFIGS[family](**settings))


def lora_config_for(config: dict[str, Any], model_config) -> LoraConfig | None:
    """The run's LoRA config (None without ``train.lora_rank``): `memmix_peft.recommended_lora_config`, or
    `memmix_peft.memory_lora_config` with ``train.lora_decoder_only``. Raises ValueError for settings PEFT
    cannot apply (e.g. dropout with adapted mixing weights)."""
    train = config["train"]
    if train["lora_rank"] is None:
        return None
    make = memory_lora_config if train["lora_decoder_only"] else recommended_lora_config
    return make(model_config, rank=train["lora_rank"], alpha=train["lora_alpha"], dropout=train["lora_dropout"],
                adapt_mixing=train["lora_adapt_mixing"])


def add_lora(model: PreTrainedModel, lora_config: LoraConfig | None):
    """The model wrapped with LoRA adapters by ``peft.get_peft_model`` (only they train), or the model itself."""
    return model if lora_config is None else get_peft_model(model, lora_config)


def build_optimizer(model: torch.nn.Module, train: dict[str, Any]) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases and norm weights (1-D tensors)."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in trainable if p.dim() >= 2]
    no_decay = [p for _, p in trainable if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": train["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train["lr"], betas=tuple(train["betas"]))


# ---------------------------------------------------------------------------------------------
# Batches: a deterministic function of the position, so resuming needs only the micro-step count
# ---------------------------------------------------------------------------------------------


class WindowBatches:
    """Micro-batches of one process: epoch ``e`` visits windows in a permutation seeded by (seed, e);
    global micro-step ``k`` takes ``batch_size * processes`` of them and this process its own slice.

    One process with batch ``2B`` sees exactly the windows two processes with batch ``B`` see together.
    """

    def __init__(self, windows: PackedWindows, batch_size: int, rank: int, world: int, seed: int):
        self.windows, self.batch_size, self.rank, self.world, self.seed = windows, batch_size, rank, world, seed
        self.global_batch = batch_size * world
        self.per_epoch = len(windows) // self.global_batch
        self._epoch, self._order = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.windows), generator=generator)
        return self._order

    def batch(self, micro_step: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(micro_step, self.per_epoch)
        start = index * self.global_batch + self.rank * self.batch_size
        rows = self._permutation(epoch)[start : start + self.batch_size]
        return window_batch(self.windows, rows)


def window_batch(windows: PackedWindows, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    input_ids = windows.input_ids[rows]
    labels = input_ids.clone()
    positions = torch.arange(windows.window)[None, :]
    labels[positions >= windows.num_tokens[rows][:, None]] = -100
    return {"input_ids": input_ids, "labels": labels, "num_bytes": windows.num_bytes[rows]}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def scored_bytes(batch: dict[str, torch.Tensor], byte_lengths: torch.Tensor, causal: bool) -> torch.Tensor:
    """Bytes of the tokens the loss scores, per window: all of them, minus the first token for causal models."""
    if not causal:
        return batch["num_bytes"]
    return batch["num_bytes"] - byte_lengths[batch["input_ids"][:, 0]]


@torch.no_grad()
def evaluate(model, windows: PackedWindows, accelerator: Accelerator, batch_size: int, causal: bool,
             byte_lengths: torch.Tensor, max_batches: int | None = None) -> dict[str, float]:
    """Validation loss (nats per scored token) and exact bits per byte over the validation windows.

    Windows are dealt round-robin to processes; every process runs the same number of batches (the short
    ones repeat window 0 with weight 0) so sharded models never wait on a missing collective.
    """
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    total = len(windows) if max_batches is None else min(len(windows), max_batches * batch_size * world)
    per_process = math.ceil(total / world)
    mine = torch.arange(rank, total, world)
    weights = torch.cat([torch.ones(len(mine)), torch.zeros(per_process - len(mine))])
    mine = torch.cat([mine, torch.zeros(per_process - len(mine), dtype=torch.long)])
    sums = torch.zeros(3, dtype=torch.float64)  # nats, scored bytes, scored tokens
    for start in range(0, per_process, batch_size):
        rows, weight = mine[start : start + batch_size], weights[start : start + batch_size]
        batch = window_batch(windows, rows)
        output = model(input_ids=batch["input_ids"].to(accelerator.device), labels=batch["labels"].to(accelerator.device))
        nats = output.token_losses.double().sum(dim=1).cpu()
        labels = batch["labels"][:, 1:] if causal else batch["labels"]
        sums += torch.stack([(nats * weight).sum(), (scored_bytes(batch, byte_lengths, causal) * weight).sum(),
                             ((labels != -100).sum(dim=1) * weight).sum()])
    sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    model.train()
    nats, num_bytes, tokens = sums.tolist()
    return {"val_loss": nats / tokens, "val_bits_per_byte": nats / (math.log(2) * num_bytes),
            "val_bytes": int(num_bytes), "val_tokens": int(tokens)}


# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------


class MetricsLog:
    """JSON-lines metrics (main process) and, optionally, TensorBoard through the accelerator."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, resume_step: int, tensorboard: bool):
        self.accelerator, self.path, self.tensorboard = accelerator, output_dir / LOG_FILE, tensorboard
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


def flat_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """Scalar view of the config for TensorBoard's hparams (lists and None become strings)."""
    flat = {"family": config["family"]}
    for section in ("model", "data", "train"):
        for key, value in config[section].items():
            flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def find_resume_checkpoint(config: dict[str, Any], accelerator: Accelerator) -> Path | None:
    """The checkpoint to resume from (train.resume: auto / never / a folder); clears old ones for 'never'."""
    train = config["train"]
    output_dir = Path(train["output_dir"])
    if train["resume"] == "never":
        if accelerator.is_main_process:
            shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
            (output_dir / LOG_FILE).unlink(missing_ok=True)
        accelerator.wait_for_everyone()
        return None
    path = latest_checkpoint(output_dir) if train["resume"] == "auto" else Path(train["resume"])
    if path is None:
        return None
    saved = read_checkpoint_config(path)
    for section in ("family", "model", "data"):
        if saved[section] != config[section]:
            raise ValueError(
                f"Cannot resume from {path}: its {section} settings differ from this run's "
                f"({saved[section]!r} vs {config[section]!r}); use another train.output_dir or --resume never"
            )
    for key in FINE_TUNE_KEYS:
        before = saved["train"].get(key, TRAIN_DEFAULTS[key])
        if before != config["train"][key]:
            raise ValueError(
                f"Cannot resume from {path}: it was trained with train.{key}={before!r}, this run asks for "
                f"{config['train'][key]!r}; use another train.output_dir or --resume never"
            )
    return path


def check_finite(loss: float, step: int, output_dir: Path, lr: float) -> None:
    if math.isfinite(loss):
        return
    last = latest_checkpoint(output_dir)
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
    raise NonFiniteLossError(
        f"Training loss became {loss} at step {step}; stopping without saving these weights ({kept}). "
        f"Lower train.lr (now {lr}) or raise train.warmup_steps, then resume."
    )


def train_step(model, optimizer, scheduler, batches: WindowBatches, micro_step: int, accelerator: Accelerator,
               train: dict[str, Any], step: int) -> tuple[float, float | None]:
    """One optimizer step of ``grad_accum`` micro-batches; returns (mean loss over processes, grad norm)."""
    accum = train["grad_accum"]
    losses = []
    for index in range(accum):
        batch = batches.batch(micro_step + index)
        sync = nullcontext() if index == accum - 1 else accelerator.no_sync(model)
        with sync:
            output = model(input_ids=batch["input_ids"].to(accelerator.device),
                           labels=batch["labels"].to(accelerator.device))
            loss = output.loss
            if train["debug_nan_at_step"] == step:
                loss = loss * float("nan")
            accelerator.backward(loss / accum)
        losses.append(loss.detach().float())
    mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
    if not math.isfinite(mean_loss):
        optimizer.zero_grad(set_to_none=True)
        return mean_loss, None
    grad_norm = None
    if train["grad_clip"]:
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), train["grad_clip"]))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss, grad_norm


def budget_spent(start: float, train: dict[str, Any], accelerator: Accelerator) -> bool:
    """True on every process when any process has used up train.max_minutes."""
    if train["max_minutes"] is None:
        return False
    spent = torch.tensor(float(time.time() - start > 60 * train["max_minutes"]), device=accelerator.device)
    return bool(accelerator.reduce(spent, reduction="sum").item() > 0)


def make_accelerator(train: dict[str, Any]) -> Accelerator:
    if train["mixed_precision"] == "fp16" and (train["cpu"] or not torch.cuda.is_available()):
        raise ValueError("train.mixed_precision='fp16' needs a GPU; on CPU use 'bf16' or 'no'")
    # cpu=True without a GPU: under torchrun/accelerate launch with several processes this is what makes
    # accelerate choose MULTI_CPU (gloo) instead of a single non-distributed process.
    use_cpu = train["cpu"] or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    accelerator = Accelerator(mixed_precision=train["mixed_precision"], cpu=use_cpu,
                              log_with="tensorboard" if train["tensorboard"] else None,
                              project_dir=train["output_dir"])
    accelerator.print(f"processes: {accelerator.num_processes}, distributed: {accelerator.distributed_type.value}, "
                      f"device: {accelerator.device}, mixed precision: {accelerator.mixed_precision}")
    return accelerator


def run_training(config: dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate, checkpoint and export as the resolved config says; returns the final metrics."""
    train = config["train"]
    output_dir = Path(train["output_dir"])
    if train["push_to_hub"]:
        check_hub_reachable(train["push_to_hub"])  # fail before hours of training, not after
    if train["init_from"] is not None:
        init_from_model_config(config)  # a mismatched checkpoint fails before anything is built
    accelerator = make_accelerator(train)
    if train["lora_merge"] and accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError("train.lora_merge=true cannot merge FSDP-sharded weights; export the adapter, then merge "
                         "it on one process with memmix_peft.merge_and_export")
    set_seed(train["seed"])
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "run_config.json")

    tokenizer = prepare_tokenizer(config, accelerator)
    planned = planned_model_config(config, tokenizer)
    lora_config = lora_config_for(config, planned)  # bad LoRA settings fail before the data is built
    window = window_length(planned)
    train_windows = prepare_windows(config, tokenizer, window, "train", accelerator)
    val_windows = prepare_windows(config, tokenizer, window, "validation", accelerator)
    model = add_lora(build_model(config, tokenizer), lora_config)
    trainable, total = count_trainable_parameters(model)
    accelerator.print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
                      + (f", LoRA rank {train['lora_rank']}" if lora_config is not None else ""))
    global_batch = train["batch_size"] * accelerator.num_processes
    check_windows_fit(train_windows, model.config, global_batch, "train")
    check_windows_fit(val_windows, model.config, global_batch, "validation")
    byte_lengths = token_byte_lengths(tokenizer)
    causal = config["family"] in CAUSAL_FAMILIES

    optimizer = build_optimizer(model, train)
    scheduler = get_cosine_schedule_with_warmup(optimizer, train["warmup_steps"], train["max_steps"])
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler is not prepared: accelerate would step it once per process. It is checkpointed all the same.
    accelerator.register_for_checkpointing(scheduler)

    state = {"step": 0, "micro_step": 0, "train_windows_seen": 0}
    resume_from = find_resume_checkpoint(config, accelerator)
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        accelerator.print(f"Resumed from {resume_from} at step {state['step']}")
    log = MetricsLog(accelerator, output_dir, state["step"], train["tensorboard"])
    if train["tensorboard"]:
        accelerator.init_trackers("tensorboard", config=flat_hparams(config))
    if state["step"] == 0:
        log.write({"step": 0, "trainable_parameters": trainable, "total_parameters": total})

    batches = WindowBatches(train_windows, train["batch_size"], accelerator.process_index,
                            accelerator.num_processes, train["seed"])
    metrics = run_loop(model, optimizer, scheduler, batches, val_windows, accelerator, config, state, log,
                       byte_lengths, causal)
    metrics.update(trainable_parameters=trainable, total_parameters=total)
    export_folder = output_dir / "export"
    upload_folder = export_folder / "adapter" if lora_config is not None and not train["lora_merge"] else export_folder
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        export_run(accelerator.unwrap_model(model), tokenizer, config, metrics, export_folder, state_dict,
                   lora=lora_config is not None)
        from evaluation.plots import plot_training_curves

        plot_training_curves(output_dir / LOG_FILE, output_dir / "loss_curve.png", title=config["family"])
        if train["push_to_hub"]:
            metrics["hub_commit"] = push_folder_to_hub(upload_folder, train["push_to_hub"], train["hub_private"])
    accelerator.wait_for_everyone()
    accelerator.end_training()
    metrics["export_dir"] = str(export_folder)
    if lora_config is not None:
        metrics["adapter_dir"] = str(export_folder / "adapter")
    return metrics


def export_run(model, tokenizer: PreTrainedTokenizerBase, config: dict[str, Any], metrics: dict[str, Any],
               export_folder: Path, state_dict: dict, lora: bool) -> None:
    """Write the export (main process): the model, or for LoRA the adapter in ``adapter/`` and, with
    ``train.lora_merge``, the merged model in the export folder itself."""
    name = Path(config["train"]["output_dir"]).name
    if not lora:
        export_model(model, tokenizer, config, metrics, export_folder, state_dict=state_dict, model_name=name)
        return
    export_adapter(model, tokenizer, config, metrics, export_folder / "adapter", state_dict=state_dict,
                   model_name=name)
    if config["train"]["lora_merge"]:
        export_merged(model, tokenizer, config, metrics, export_folder, model_name=name)


def run_loop(model, optimizer, scheduler, batches: WindowBatches, val_windows: PackedWindows,
             accelerator: Accelerator, config: dict[str, Any], state: dict[str, Any], log: MetricsLog,
             byte_lengths: torch.Tensor, causal: bool) -> dict[str, Any]:
    """The optimizer-step loop with evaluation, logging, checkpoints, NaN stop and time budget."""
    train, output_dir = config["train"], Path(config["train"]["output_dir"])
    start, first_step = time.time(), state["step"]
    windows_per_step = batches.global_batch * train["grad_accum"]
    stop_at = train["max_steps"]
    if train["stop_after_steps"] is not None:
        stop_at = min(stop_at, first_step + train["stop_after_steps"])
    recent: list[float] = []
    last_eval: dict[str, Any] = {}

    def do_eval(step: int) -> dict[str, Any]:
        result = evaluate(model, val_windows, accelerator, train["batch_size"], causal, byte_lengths,
                          train["eval_batches"])
        log.write({"step": step, **result})
        return {"step": step, **result}

    def do_save(step: int) -> None:
        save_checkpoint(accelerator, output_dir, step, dict(state), config, keep=train["keep_checkpoints"])

    if train["init_from"] is not None and first_step == 0:
        do_eval(0)  # the checkpoint's validation loss on this data, before fine-tuning
    bar = tqdm(total=train["max_steps"], initial=first_step, disable=not accelerator.is_local_main_process,
               desc=config["family"])
    while state["step"] < stop_at:
        step = state["step"] + 1
        loss, grad_norm = train_step(model, optimizer, scheduler, batches, state["micro_step"], accelerator,
                                     train, step)
        check_finite(loss, step, output_dir, train["lr"])
        state.update(step=step, micro_step=state["micro_step"] + train["grad_accum"],
                     train_windows_seen=state["train_windows_seen"] + windows_per_step)
        recent.append(loss)
        bar.update(1)
        if step % train["log_every"] == 0:
            log.write({"step": step, "train_loss": sum(recent) / len(recent), "lr": scheduler.get_last_lr()[0],
                       "grad_norm": grad_norm, "train_windows_seen": state["train_windows_seen"],
                       "elapsed_s": round(time.time() - start, 3)})
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", **(
                {"val_bpb": f"{last_eval['val_bits_per_byte']:.3f}"} if last_eval else {}))
            recent = []
        if step % train["eval_every"] == 0:
            last_eval = do_eval(step)
        if step % train["save_every"] == 0:
            do_save(step)
        if budget_spent(start, train, accelerator):
            accelerator.print(f"Time budget of {train['max_minutes']} min spent at step {step}; finishing")
            break
    bar.close()
    step = state["step"]
    if last_eval.get("step") != step:
        last_eval = do_eval(step)
    if step % train["save_every"] != 0:
        do_save(step)
    return {**last_eval, "train_windows": state["train_windows_seen"], "elapsed_s": round(time.time() - start, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    config = resolve_run_config(args)
    if args.print_config:
        print(json.dumps(config, indent=2, sort_keys=True))
        return {"config": config}
    return run_training(config)


if __name__ == "__main__":
    try:
        result = main()
    except (ValueError, FileNotFoundError, NonFiniteLossError, HubOfflineError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    if "val_bits_per_byte" in result and PartialState().is_main_process:
        print(f"validation bits per byte {result['val_bits_per_byte']:.4f}, loss {result['val_loss']:.4f}; "
              f"exported to {result['export_dir']}")
