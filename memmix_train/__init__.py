"""memmix training helpers used by ``train_accelerate.py``.

- `memmix_train.config`: run presets (JSON data files in ``configuration/``) and ``--set`` overrides.
- `memmix_train.checkpointing`: resumable checkpoints written atomically with a completion marker.
- `memmix_train.export`: the Hub-ready folder (weights, remote code, tokenizer, model card) and the upload.
"""
