"""The run configuration: a preset file from ``configuration/`` plus ``--set section.key=value`` overrides, resolved
once into a typed, checked `RunConfig`.

A preset is a JSON object with four parts::

    {"family": "autoencoder",                 # mixer | autoencoder | memory (modeling_memmix.families)
     "model": {"hidden_size": 64, ...},       # fields of the family's config class
     "data":  {"corpus": "builtin", ...},     # fields of DataConfig
     "train": {"lr": 0.002, ...}}             # fields of TrainConfig

Missing ``data`` / ``train`` keys take the dataclass defaults below; unknown keys are errors, so a typo never
passes silently. An override is ``section.key=value`` (or a bare ``key=value`` when the key exists in one
section only); the value is read as JSON when it parses (``1e-3``, ``true``, ``null``, ``[0.9, 0.95]``)
and as a plain string otherwise. `RunConfig.to_dict` is what every checkpoint and export stores as
``run_config.json`` (the same four parts, every default written out), and `RunConfig.from_dict` reads it back.

Fine-tuning (see docs/LORA.md): ``train.init_from`` is an exported model folder (or Hub id) whose weights the
run starts from; the preset's ``model`` keys must then equal the checkpoint's (the others are taken from it).
``train.lora_rank`` (with ``init_from``) trains LoRA adapters instead of every weight.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memmix_data import check_train_fraction
from modeling_memmix.families import FAMILIES, Family

SECTIONS = ("model", "data", "train")
MIXED_PRECISION = ("no", "bf16", "fp16")
RESUME_WORDS = ("auto", "never")
POSITIVE_INTEGERS = ("batch_size", "grad_accum", "max_steps", "eval_every", "log_every", "save_every",
                     "keep_checkpoints")
OPTIMIZER_IMPLS = ("fused", "foreach", "for_loop")
LR_SCHEDULES = ("steps", "time")  # what the cosine decay runs over (memmix_train/loop.py build_scheduler)
REPEAT_SOURCES = ("any", "first", "previous")  # which earlier chunk recall training copies (memmix_train/batches.py)
LORA_SWITCHES = ("lora_adapt_mixing", "lora_decoder_only", "lora_merge")


@dataclass
class DataConfig:
    """Where the text comes from, how it is split and tokenized, and where packed windows are cached."""

    corpus: str | list[str] = "builtin"  # "builtin", local .txt/.jsonl/.parquet paths or globs, or a Hub dataset id
    text_column: str = "text"
    hub_split: str = "train"
    max_documents: int | None = None  # read only the first N documents (quick runs)
    validation_fraction: float = 0.05
    split_seed: int = 0
    train_fraction: float = 1.0  # train on this share of the training documents (nested, hash-picked); validation kept
    tokenizer: str | None = None  # folder of an existing tokenizer; None = train one (saved in output_dir/tokenizer)
    vocab_size: int = 8000  # size of a newly trained tokenizer
    cache_dir: str = "runs/cache"  # packed windows are cached here and reused

    def __post_init__(self) -> None:
        try:
            check_train_fraction(self.train_fraction)
        except ValueError as error:
            raise ValueError(f"data.{error}") from None


@dataclass
class TrainConfig:
    """Optimizer, schedule, precision, evaluation / checkpoint cadence, fine-tuning and Hub settings."""

    output_dir: str = "runs/run"
    seed: int = 0
    batch_size: int = 8  # windows per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 20
    max_steps: int = 200  # length of the schedule (optimizer steps)
    max_minutes: float | None = None  # wall-clock budget; the run saves, evaluates and exports when it is spent
    # steps: cosine decay to 0 at max_steps, max_minutes only stops this invocation (step-determined runs);
    # time: decay to 0 when the first of max_steps and max_minutes runs out, the budget counting every invocation
    lr_schedule: str = "steps"
    stop_after_steps: int | None = None  # stop this invocation after N steps (checkpoint kept); schedule unchanged
    grad_clip: float | None = 1.0  # max gradient norm; None or 0 disables clipping
    random_offsets: bool = False  # each training window starts at a random offset in the token stream (more windows)
    repeat_chunks: float = 0.0  # memory family: fraction of windows where one chunk repeats an earlier one (recall)
    repeat_source: str = "any"  # the chunk it repeats: any earlier one, always the first, or the one just before
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16 needs a GPU)
    cpu: bool = False  # force CPU even when a GPU is present
    eval_every: int = 50
    eval_batches: int | None = None  # None = the whole validation split
    log_every: int = 10
    save_every: int = 50
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto (latest complete checkpoint in output_dir), never, or a checkpoint folder
    tensorboard: bool = True
    init_from_autoencoder: str | None = None  # memory family: exported autoencoder folder whose encoder is reused
    freeze_encoder: bool = True  # with init_from_autoencoder
    init_from: str | None = None  # exported model folder (save_pretrained output) or Hub id to fine-tune from
    lora_rank: int | None = None  # LoRA adapters of this rank on the init_from model (None = train every weight)
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    lora_adapt_mixing: bool = False  # also adapt the token-mixing matrices (under the causal mask)
    lora_decoder_only: bool = False  # memory family: decoder side only (memmix_peft.memory_lora_config)
    lora_merge: bool = False  # also export the merged full model to export/ (the adapter goes to export/adapter/)
    push_to_hub: str | None = None  # repo id to upload the export to
    hub_private: bool = False
    debug_nan_at_step: int | None = None  # test hook: make the loss NaN at this step
    compile: bool = False  # torch.compile(fullgraph=True) the model's forward (and so its backward)
    compile_backend: str = "inductor"  # torch.compile backend (e.g. "aot_eager" to check tracing without codegen)
    optimizer_impl: str = "fused"  # AdamW implementation: fused | foreach | for_loop (benchmarks/RESULTS_training.md)
    chunked_loss: bool = True  # LM head + cross-entropy in chunks, no full-vocabulary logits (return_logits=False)

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"train.mixed_precision={self.mixed_precision!r}; choose one of {list(MIXED_PRECISION)}")
        for name in POSITIVE_INTEGERS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"train.{name}={value!r} must be a positive integer")
        if not _is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps={self.warmup_steps!r} must be an integer >= 0")
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            raise ValueError(f"train.lr={self.lr!r} must be a positive number")
        for name in ("compile", "chunked_loss", "random_offsets"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train.{name}={getattr(self, name)!r} must be true or false")
        if not isinstance(self.repeat_chunks, (int, float)) or isinstance(self.repeat_chunks, bool) \
                or not 0 <= self.repeat_chunks <= 1:
            raise ValueError(f"train.repeat_chunks={self.repeat_chunks!r} must be a fraction in [0, 1]")
        if self.repeat_source not in REPEAT_SOURCES:
            raise ValueError(f"train.repeat_source={self.repeat_source!r}; choose one of {list(REPEAT_SOURCES)}")
        if self.repeat_source != "any" and not self.repeat_chunks:
            raise ValueError(f"train.repeat_source={self.repeat_source!r} says which chunk recall training copies; "
                             "it needs train.repeat_chunks > 0")
        if self.max_minutes is not None and (not isinstance(self.max_minutes, (int, float))
                                             or isinstance(self.max_minutes, bool) or self.max_minutes <= 0):
            raise ValueError(f"train.max_minutes={self.max_minutes!r} must be a positive number of minutes (or null)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule={self.lr_schedule!r}; choose one of {list(LR_SCHEDULES)}")
        if self.lr_schedule == "time" and self.max_minutes is None:
            raise ValueError("train.lr_schedule='time' decays the learning rate over the time budget; it needs "
                             "train.max_minutes (e.g. 20)")
        if self.optimizer_impl not in OPTIMIZER_IMPLS:
            raise ValueError(f"train.optimizer_impl={self.optimizer_impl!r}; choose one of {list(OPTIMIZER_IMPLS)}")
        if self.compile:
            import torch._dynamo

            backends = torch._dynamo.list_backends(exclude_tags=())
            if self.compile_backend not in backends:
                raise ValueError(f"train.compile_backend={self.compile_backend!r} is not a torch.compile backend; "
                                 f"choose one of {backends}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def train_default(name: str) -> Any:
    """The default of one ``train`` key (what a run_config.json written before the key existed means)."""
    return getattr(TrainConfig(), name)


def check_family(family: str) -> Family:
    """The registry entry of ``family`` (`modeling_memmix.families`), or ValueError listing the choices."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not supported; choose one of {list(FAMILIES)}")
    return FAMILIES[family]


def config_fields(family: str) -> set[str]:
    """Field names the family's model config accepts."""
    return _field_names(check_family(family).config_class)


@dataclass
class RunConfig:
    """One resolved run: the family, its model settings (checked against the family's config class, which types
    them) and the typed data and train sections. Build it with `load_preset`, `resolve_config` or `from_dict`."""

    family: str
    model: dict[str, Any]
    data: DataConfig
    train: TrainConfig

    def __post_init__(self) -> None:
        check_family(self.family)
        check_fine_tuning(self)
        if self.train.repeat_chunks and self.family != "memory":
            raise ValueError(f"train.repeat_chunks={self.train.repeat_chunks} is for family='memory' (chunks that "
                             f"memories can recall), got family={self.family!r}")

    @property
    def family_entry(self) -> Family:
        """The family's registry entry: config and model classes, causal, Auto class."""
        return FAMILIES[self.family]

    @property
    def output_dir(self) -> Path:
        return Path(self.train.output_dir)

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of ``run_config.json``: family, model, data and train, every default written out."""
        return {"family": self.family, "model": dict(self.model), "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        """Fill defaults into a raw preset (or a saved run_config.json) and check every section and key."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: a preset must be a JSON object, got {type(raw).__name__}")
        unknown = set(raw) - {"family", *SECTIONS}
        if unknown:
            raise ValueError(
                f"{source}: unknown top-level keys {sorted(unknown)}; allowed: family, {', '.join(SECTIONS)}"
            )
        family = raw.get("family")
        if family is None:
            raise ValueError(f"{source}: missing 'family' (one of {list(FAMILIES)})")
        check_family(family)
        sections = {"model": dict(raw.get("model", {})), "data": dict(raw.get("data", {})),
                    "train": dict(raw.get("train", {}))}
        for section, allowed in _allowed_keys(family).items():
            unknown = set(sections[section]) - allowed
            if unknown:
                raise ValueError(
                    f"{source}: unknown {section} keys {sorted(unknown)}; known {section} keys: {sorted(allowed)}"
                )
        return cls(family, sections["model"], DataConfig(**sections["data"]), TrainConfig(**sections["train"]))

    def with_overrides(self, overrides: Iterable[str]) -> RunConfig:
        """A new config with ``key=value`` overrides applied and checked (this one is untouched)."""
        raw = self.to_dict()
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"Override {item!r} must look like section.key=value, e.g. train.lr=1e-3")
            key, text = item.split("=", 1)
            key = key.strip()
            if key == "family":
                check_family(text)
                raw["family"] = text
                continue
            section, name = _locate(raw["family"], key)
            raw[section][name] = parse_value(text)
        return RunConfig.from_dict(raw, source="overrides")


def _allowed_keys(family: str) -> dict[str, set[str]]:
    return {"model": config_fields(family), "data": _field_names(DataConfig), "train": _field_names(TrainConfig)}


def check_fine_tuning(config: RunConfig) -> None:
    """Raise ValueError for init_from / LoRA settings that cannot work together."""
    train = config.train
    if train.init_from is not None and train.init_from_autoencoder is not None:
        raise ValueError(
            f"train.init_from={train.init_from!r} and train.init_from_autoencoder="
            f"{train.init_from_autoencoder!r} are both set; a run starts from one of them"
        )
    for name in LORA_SWITCHES:
        if not isinstance(getattr(train, name), bool):
            raise ValueError(f"train.{name}={getattr(train, name)!r} must be true or false")
    rank = train.lora_rank
    if rank is None:
        switched_on = [name for name in LORA_SWITCHES if getattr(train, name)]
        if switched_on:
            raise ValueError(f"train.{switched_on[0]}=true needs LoRA; set train.lora_rank (e.g. 8)")
        return
    if not _is_int(rank) or rank < 1:
        raise ValueError(f"train.lora_rank={rank!r} must be a positive integer (or null for no LoRA)")
    if train.init_from is None:
        raise ValueError(
            f"train.lora_rank={rank} needs train.init_from: LoRA adapts a trained checkpoint (an exported model "
            "folder such as runs/mixer_tiny/export)"
        )
    if not isinstance(train.lora_alpha, (int, float)) or train.lora_alpha <= 0:
        raise ValueError(f"train.lora_alpha={train.lora_alpha!r} must be a positive number")
    if not isinstance(train.lora_dropout, (int, float)) or not 0 <= train.lora_dropout < 1:
        raise ValueError(f"train.lora_dropout={train.lora_dropout!r} must be in [0, 1)")
    if train.lora_decoder_only and config.family != "memory":
        raise ValueError(f"train.lora_decoder_only=true is for family='memory', got family={config.family!r}")


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists, objects), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _locate(family: str, key: str) -> tuple[str, str]:
    """(section, name) of an override key: ``section.name``, or a bare name known to exactly one section."""
    allowed = _allowed_keys(family)
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


def resolve_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """`RunConfig.from_dict`: defaults filled in, every key checked."""
    return RunConfig.from_dict(raw, source)


def load_preset(path: str | os.PathLike) -> RunConfig:
    """Read a preset file and return it resolved (defaults filled in, every key checked)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Preset file {path!s} does not exist (presets live in configuration/*.json)")
    with open(path, encoding="utf-8") as handle:
        try:
            raw = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"Preset {path!s} is not valid JSON: {error}") from None
    return resolve_config(raw, source=str(path))


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """`RunConfig.with_overrides`: a copy of ``config`` with ``key=value`` overrides applied and checked."""
    return config.with_overrides(overrides)


def save_config(config: RunConfig | dict[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved configuration as indented JSON (``run_config.json``)."""
    content = config.to_dict() if isinstance(config, RunConfig) else config
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")
