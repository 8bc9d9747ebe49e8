"""memmix training: the pieces `train_accelerate.py` runs top to bottom (and benchmarks reuse).

- `memmix_train.config`: the typed run config (`RunConfig` of `DataConfig` / `TrainConfig`) from presets
  (JSON data files in ``configuration/``) and ``--set`` overrides, checked once.
- `memmix_train.data`: the tokenizer and packed train / validation windows, checked against the model.
- `memmix_train.batches`: deterministic micro-batches of packed windows (resume needs only the step count).
- `memmix_train.model_builder`: the ``init_from`` check, the model plan (config, window, LoRA) and the build.
- `memmix_train.loop`: AdamW + warmup/cosine, one optimizer step, and the loop (log, evaluate, save, NaN stop).
- `memmix_train.validation`: exact validation loss and bits per byte on any number of processes.
- `memmix_train.metrics_log`: ``metrics.jsonl`` and TensorBoard scalars.
- `memmix_train.checkpointing`: resumable checkpoints written atomically with a completion marker; resume lookup.
- `memmix_train.export`: the Hub-ready folder (weights, remote code, tokenizer, model card) and the upload.
"""
