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

Compiled (``torch.compile(fullgraph=True)`` of the model's forward and backward; ``train.compile_backend``
chooses the backend, default inductor)::

    python train_accelerate.py --preset configuration/mixer_tiny.json --set train.compile=true

Several processes or GPUs (see configuration/accelerate/)::

    accelerate launch --config_file configuration/accelerate/cpu_2proc.yaml train_accelerate.py --preset ...

`run_training` reads top to bottom: setup -> data -> model -> optimizer -> (resume) -> loop (evaluate every
``train.eval_every`` steps, checkpoint every ``train.save_every``) -> final evaluation -> export (+ push). The
pieces live in `memmix_train`. Outputs under ``train.output_dir``: ``checkpoints/step_N`` (resumable),
``export/`` (Hub-ready folder), ``metrics.jsonl``, ``tensorboard/``, ``loss_curve.png``, ``run_config.json``.

Fine-tuning: ``train.init_from`` (an exported folder or Hub id) gives the starting weights; the preset's model keys
must equal the checkpoint's. A run from ``init_from`` evaluates once before its first step (logged as step 0).
With ``train.lora_rank`` the model is wrapped by ``peft.get_peft_model`` (targets from `memmix_peft`), only the
adapters train, the export is ``export/adapter/`` (adapter only) and, with ``train.lora_merge``, also the merged
full model in ``export/``. Every run logs its trainable-parameter count (step 0 of ``metrics.jsonl``).

Bits per byte are exact: summed validation cross-entropy in nats / (ln 2 x bytes of the scored tokens); the causal
families do not score (or count the bytes of) the first token of a window (`memmix_train.validation`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, set_seed

from memmix_data import token_byte_lengths
from memmix_hub import HubUnreachableError
from memmix_peft import count_trainable_parameters
from memmix_train.batches import WindowBatches
from memmix_train.checkpointing import find_resume_checkpoint, load_checkpoint, save_checkpoint
from memmix_train.config import RunConfig, TrainConfig, load_preset, save_config
from memmix_train.data import check_windows_fit, prepare_tokenizer, prepare_windows
from memmix_train.export import check_push_possible, export_run, push_folder_to_hub
from memmix_train.loop import (
    BudgetClock,
    NonFiniteLossError,
    Progress,
    build_optimizer,
    build_scheduler,
    run_loop,
)
from memmix_train.metrics_log import LOG_FILE, MetricsLog, flat_hparams
from memmix_train.model_builder import build_model, check_init_from, plan_model
from memmix_train.validation import evaluate


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


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """Preset + --set overrides + the shortcut flags, checked."""
    overrides = list(args.overrides)
    for flag in ("output_dir", "max_steps", "max_minutes", "resume", "push_to_hub"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"train.{flag}={json.dumps(value) if not isinstance(value, str) else value}")
    return load_preset(args.preset).with_overrides(overrides)


def make_accelerator(train: TrainConfig) -> Accelerator:
    if train.mixed_precision == "fp16" and (train.cpu or not torch.cuda.is_available()):
        raise ValueError("train.mixed_precision='fp16' needs a GPU; on CPU use 'bf16' or 'no'")
    # cpu=True without a GPU: under torchrun/accelerate launch with several processes this is what makes
    # accelerate choose MULTI_CPU (gloo) instead of a single non-distributed process.
    use_cpu = train.cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    accelerator = Accelerator(mixed_precision=train.mixed_precision, cpu=use_cpu,
                              log_with="tensorboard" if train.tensorboard else None, project_dir=train.output_dir)
    accelerator.print(f"processes: {accelerator.num_processes}, distributed: {accelerator.distributed_type.value}, "
                      f"device: {accelerator.device}, mixed precision: {accelerator.mixed_precision}")
    if train.lora_merge and accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError("train.lora_merge=true cannot merge FSDP-sharded weights; export the adapter, then merge "
                         "it on one process with memmix_peft.merge_and_export")
    return accelerator


def run_training(config: RunConfig) -> dict[str, Any]:
    """Train, evaluate, checkpoint and export as the resolved config says; returns the final metrics."""
    train, output_dir = config.train, config.output_dir

    # --- setup: what can fail without building anything fails first
    if train.push_to_hub:
        check_push_possible(train.push_to_hub)  # fail before hours of training, not after
    checkpoint_config = check_init_from(config)  # a mismatched init_from checkpoint fails here, once
    accelerator = make_accelerator(train)
    set_seed(train.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "run_config.json")

    # --- data: the tokenizer, the model's window length, packed windows
    tokenizer = prepare_tokenizer(config, accelerator)
    plan = plan_model(config, tokenizer, checkpoint_config)  # bad LoRA settings fail before the data is built
    train_windows = prepare_windows(config.data, tokenizer, plan.window, "train", accelerator)
    val_windows = prepare_windows(config.data, tokenizer, plan.window, "validation", accelerator)

    # --- model
    model = build_model(config, plan)
    trainable, total = count_trainable_parameters(model)
    accelerator.print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
                      + (f", LoRA rank {train.lora_rank}" if plan.lora is not None else ""))
    global_batch = train.batch_size * accelerator.num_processes
    check_windows_fit(train_windows, model.config, global_batch, "train")
    check_windows_fit(val_windows, model.config, global_batch, "validation")

    # --- optimizer
    optimizer = build_optimizer(model, train)
    clock = BudgetClock()  # the share of train.max_minutes spent, for lr_schedule='time'
    scheduler = build_scheduler(optimizer, train, clock)
    model, optimizer = accelerator.prepare(model, optimizer)
    if train.compile:  # the windows were checked on the host above: the compiled graph has no value checks
        core = accelerator.unwrap_model(model)
        core.forward = torch.compile(core.forward, fullgraph=True, backend=train.compile_backend)
    # The scheduler is not prepared: accelerate would step it once per process. It is checkpointed all the same.
    accelerator.register_for_checkpointing(scheduler)

    # --- resume, logs
    progress = Progress()
    resume_from = find_resume_checkpoint(config, accelerator, LOG_FILE)
    if resume_from is not None:
        progress = Progress(**load_checkpoint(accelerator, resume_from))
        accelerator.print(f"Resumed from {resume_from} at step {progress.step}")
    log = MetricsLog(accelerator, output_dir, progress.step, train.tensorboard)
    if train.tensorboard:
        accelerator.init_trackers("tensorboard", config=flat_hparams(config))
    if progress.step == 0:
        log.write({"step": 0, "trainable_parameters": trainable, "total_parameters": total})

    # --- loop
    byte_lengths = token_byte_lengths(tokenizer)

    def evaluate_at(step: int) -> dict[str, Any]:
        result = {"step": step, **evaluate(model, val_windows, accelerator, train.batch_size,
                                           config.family_entry.causal, byte_lengths, train.eval_batches)}
        log.write(result)
        return result

    def save_at(step: int) -> None:
        save_checkpoint(accelerator, output_dir, step, dataclasses.asdict(progress), config,
                        keep=train.keep_checkpoints)

    started = time.time()
    if train.init_from is not None and progress.step == 0:
        evaluate_at(0)  # the checkpoint's validation loss on this data, before fine-tuning
    batches = WindowBatches(train_windows, train.batch_size, accelerator.process_index, accelerator.num_processes,
                            train.seed, random_offsets=train.random_offsets, repeat_chunks=train.repeat_chunks,
                            chunk=plan.config.n_ctx, repeat_source=train.repeat_source)
    last_eval = run_loop(model, optimizer, scheduler, batches, accelerator, train, progress, log, evaluate_at,
                         save_at, started, desc=config.family, clock=clock)

    # --- final evaluation (unless the loop just evaluated) and a checkpoint of the final weights
    if last_eval.get("step") != progress.step:
        last_eval = evaluate_at(progress.step)
    if progress.step % train.save_every != 0:
        save_at(progress.step)
    metrics = {**last_eval, "train_windows": progress.train_windows_seen,
               "elapsed_s": round(time.time() - started, 1), "trainable_parameters": trainable,
               "total_parameters": total}

    # --- export (+ plot, push)
    export_folder = output_dir / "export"
    upload_folder = export_folder / "adapter" if plan.lora is not None and not train.lora_merge else export_folder
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        export_run(accelerator.unwrap_model(model), tokenizer, config, metrics, export_folder, state_dict,
                   lora=plan.lora is not None)
        from evaluation.plots import plot_training_curves

        plot_training_curves(output_dir / LOG_FILE, output_dir / "loss_curve.png", title=config.family)
        if train.push_to_hub:
            metrics["hub_commit"] = push_folder_to_hub(upload_folder, train.push_to_hub, train.hub_private)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    metrics["export_dir"] = str(export_folder)
    if plan.lora is not None:
        metrics["adapter_dir"] = str(export_folder / "adapter")
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    config = resolve_run_config(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        return {"config": config}
    return run_training(config)


if __name__ == "__main__":
    try:
        result = main()
    except (ValueError, FileNotFoundError, NonFiniteLossError, HubUnreachableError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    if "val_bits_per_byte" in result and PartialState().is_main_process:
        accuracy = (f", token accuracy {result['val_token_accuracy']:.1%}" if "val_token_accuracy" in result
                    else "")
        print(f"validation bits per byte {result['val_bits_per_byte']:.4f}, loss {result['val_loss']:.4f}{accuracy}; "
              f"exported to {result['export_dir']}")
