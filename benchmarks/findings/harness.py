"""Shared parts of the findings scripts (F1-F9, docs/FINDINGS.md) and of the autoencoder recipe search.

- `load_data`: the built-in corpus, a byte-level BPE tokenizer trained on its training split, packed train and
  held-out windows of ``n_ctx`` tokens (cached under ``runs/findings``), and the corpus' bytes per token.
- `train_model`: a seeded training run with train_accelerate.py's optimizer, schedule and step
  (`memmix_train.loop`); it records the loss and gradient norm of every step, optional held-out evaluations,
  and stops at ``steps`` or a wall-clock budget.
- `autoencoder_scores` / `causal_loss`: held-out reconstruction cross-entropy, token (Hamming) accuracy and
  information retained; next-token loss of causal models.
- `seed_stats` / `verdict`: mean, spread over seeds and the reproduced / refuted / inconclusive call.
- `write_finding`: the Markdown table, the JSON of every number and the PNG in ``docs/findings/``.

Batches are drawn from a generator seeded by the run's seed, separate from the model's initialisation, so two
variants trained with one seed see the same windows in the same order.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from memmix_data import load_documents, load_or_build_windows, load_or_train_tokenizer, split_documents
from memmix_train.config import TrainConfig
from memmix_train.loop import build_optimizer, build_scheduler, train_step

REPO = Path(__file__).resolve().parents[2]
WORK_DIR = REPO / "runs" / "findings"
FINDINGS_DIR = REPO / "docs" / "findings"


@dataclass
class Data:
    """Tokenizer and packed windows of the built-in corpus at one window length."""

    tokenizer: object
    train_ids: torch.Tensor  # (N, n_ctx)
    val_ids: torch.Tensor  # (M, n_ctx), held out (documents the tokenizer and training never saw)
    bytes_per_token: float  # of the held-out windows

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)


def load_data(n_ctx: int, vocab_size: int = 4000, work_dir: Path = WORK_DIR) -> Data:
    """The built-in corpus cut into windows of ``n_ctx`` tokens (5 % of documents held out)."""
    documents = load_documents("builtin")
    train_docs, _ = split_documents(documents, 0.05, 0)
    tokenizer = load_or_train_tokenizer(str(work_dir / f"tokenizer_{vocab_size}"), train_docs, vocab_size)
    windows = {split: load_or_build_windows("builtin", tokenizer, window=n_ctx, split=split,
                                            cache_dir=str(work_dir / "cache"))
               for split in ("train", "validation")}
    val = windows["validation"]
    return Data(tokenizer, windows["train"].input_ids, val.input_ids,
                float(val.num_bytes.sum()) / float(val.num_tokens.sum()))


@dataclass
class Schedule:
    """How long and how fast a run trains (AdamW, linear warmup, cosine decay to 0 at ``steps``)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    bf16: bool = False  # bf16 autocast (fast on CPUs with AMX)
    max_minutes: float | None = None  # stop early when spent (the schedule stays that of ``steps``)
    eval_every: int | None = None
    device: str = "cpu"  # "cuda": the model trains on the GPU (batches are moved there by train_step)


@dataclass
class Run:
    """What one training run recorded."""

    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)  # before clipping
    evals: list[tuple[int, dict]] = field(default_factory=list)  # (step, evaluate(model))
    seconds: float = 0.0
    steps_done: int = 0

    def mean_loss(self, last: int = 20) -> float:
        tail = self.losses[-last:]
        return sum(tail) / len(tail)


def train_model(model: torch.nn.Module, train_ids: torch.Tensor, schedule: Schedule, seed: int,
                make_batch: Callable[[torch.Tensor], dict] | None = None,
                evaluate: Callable[[torch.nn.Module], dict] | None = None) -> Run:
    """Train ``model`` in place on windows drawn (with a generator seeded by ``seed``) from ``train_ids``.

    ``make_batch(ids)`` turns drawn windows into the forward's keyword arguments (default: ``input_ids`` and
    ``labels`` both ``ids``); ``evaluate(model)`` runs every ``schedule.eval_every`` steps and at the end, in
    eval mode and without gradients.
    """
    settings = TrainConfig(lr=schedule.lr, weight_decay=schedule.weight_decay, betas=[0.9, 0.95],
                           warmup_steps=schedule.warmup_steps, max_steps=schedule.steps,
                           batch_size=schedule.batch_size, grad_clip=schedule.grad_clip)
    AcceleratorState._reset_state(reset_partial_state=True)  # runs in one process may differ in precision
    accelerator = Accelerator(cpu=schedule.device == "cpu", mixed_precision="bf16" if schedule.bf16 else "no")
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings)
    model = accelerator.prepare(model)  # one plain process: autocast around forward when bf16
    batches = torch.Generator().manual_seed(seed)
    make_batch = make_batch or (lambda ids: {"input_ids": ids, "labels": ids})
    run, started = Run(), time.time()
    model.train()
    for step in range(1, schedule.steps + 1):
        rows = torch.randint(0, train_ids.shape[0], (schedule.batch_size,), generator=batches)
        loss, grad_norm = train_step(model, optimizer, scheduler, [make_batch(train_ids[rows])], accelerator,
                                     schedule.grad_clip)
        run.losses.append(loss)
        run.grad_norms.append(float("nan") if grad_norm is None else grad_norm)
        run.steps_done = step
        out_of_time = schedule.max_minutes is not None and time.time() - started > 60 * schedule.max_minutes
        if evaluate and ((schedule.eval_every and step % schedule.eval_every == 0) or step == schedule.steps
                         or out_of_time):
            run.evals.append((step, _evaluate(model, evaluate)))
        if out_of_time or not math.isfinite(loss):
            break
    run.seconds = time.time() - started
    model.eval()
    return run


def _evaluate(model: torch.nn.Module, evaluate: Callable[[torch.nn.Module], dict]) -> dict:
    model.eval()
    with torch.no_grad():
        result = evaluate(model)
    model.train()
    return result


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's weights are (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def autoencoder_scores(model, ids: torch.Tensor, batch_size: int = 64, embedding_format: str | None = None) -> dict:
    """Held-out reconstruction cross-entropy (nats/token), token accuracy (fraction regenerated exactly by the
    argmax) and information retained ``I_e = 1 - CE / ln V``; the embedding stored in ``embedding_format``."""
    nats, correct = 0.0, 0
    device = model_device(model)
    for start in range(0, ids.shape[0], batch_size):
        batch = ids[start : start + batch_size].to(device)
        logits = model(input_ids=batch, embedding_format=embedding_format).logits.float()
        nats += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.flatten(), reduction="sum"))
        correct += int((logits.argmax(-1) == batch).sum())
    tokens = ids.numel()
    ce = nats / tokens
    return {"ce": ce, "accuracy": correct / tokens, "information": 1 - ce / math.log(model.config.vocab_size)}


@torch.no_grad()
def causal_loss(model, ids: torch.Tensor, batch_size: int = 32, **forward_kwargs) -> torch.Tensor:
    """Mean next-token loss at every predicted position, (T - 1,) nats, over the windows ``ids``."""
    total = torch.zeros(ids.shape[1] - 1, dtype=torch.float64)
    device = model_device(model)
    for start in range(0, ids.shape[0], batch_size):
        batch = ids[start : start + batch_size].to(device)
        logits = model(input_ids=batch, **forward_kwargs).logits.float()
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")
        total += losses.double().sum(0).cpu()
    return total / ids.shape[0]


@dataclass
class Stats:
    mean: float
    std: float  # sample standard deviation over seeds (0 for one seed)
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.std:.2g}" if self.n > 1 else f"{self.mean:.4g}"


def seed_stats(values: Sequence[float]) -> Stats:
    values = [float(v) for v in values]
    return Stats(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def verdict(effects: Sequence[float], expected_positive: bool = True, minimum: float = 0.0) -> str:
    """The call on a per-seed effect (positive = the seed's direction when ``expected_positive``).

    reproduced: every seed shows the effect beyond ``minimum`` and the mean exceeds twice its standard error;
    refuted: the mean is beyond twice its standard error (and ``minimum``) in the opposite direction;
    otherwise inconclusive.
    """
    signed = [e if expected_positive else -e for e in effects]
    stats = seed_stats(signed)
    error = stats.std / math.sqrt(stats.n) if stats.n > 1 else float("inf")
    if all(e > minimum for e in signed) and stats.mean > 2 * error:
        return "reproduced"
    if stats.mean < -max(minimum, 2 * error):
        return "refuted"
    return "inconclusive"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_finding(name: str, title: str, command: str, settings: str, table: str, verdict_text: str,
                  results: dict, figure=None, out_dir: Path = FINDINGS_DIR) -> Path:
    """``out_dir/name.md`` (title, command, settings, table, verdict, the PNG), ``name.json`` and ``name.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Command: `{command}`", "", settings, "", table, "", f"**Verdict:** {verdict_text}", ""]
    if figure is not None:
        figure.savefig(out_dir / f"{name}.png", dpi=110, bbox_inches="tight")
        lines += [f"![{name}]({name}.png)", ""]
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1, default=_jsonable), encoding="utf-8")
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines[:-2] if figure is not None else lines))
    print(f"wrote {path}")
    return path


def _jsonable(value):
    if isinstance(value, (Stats, Schedule)):
        return asdict(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` values (the first ones average what is there)."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def plot_band(ax, xs: Sequence[float], per_seed: Sequence[Sequence[float]], label: str, **style) -> None:
    """Mean over seeds as a line and mean ± standard deviation as a shaded band (runs cut to the shortest)."""
    length = min(len(xs), *(len(ys) for ys in per_seed))
    columns = [[ys[i] for ys in per_seed] for i in range(length)]
    stats = [seed_stats(column) for column in columns]
    means = [s.mean for s in stats]
    line, = ax.plot(xs[:length], means, label=label, **style)
    if len(per_seed) > 1:
        ax.fill_between(xs[:length], [s.mean - s.std for s in stats], [s.mean + s.std for s in stats],
                        color=line.get_color(), alpha=0.2, linewidth=0)


def attention_heads(width: int) -> int:
    """Llama heads for a transformer of ``width`` (head size 32 up to 16 heads, then wider heads)."""
    heads = max(1, min(16, width // 32))
    while width % heads:
        heads -= 1
    return heads


def add_run_arguments(parser, presets: dict[str, dict], seeds: Sequence[int] = (0, 1, 2)) -> None:
    """The flags every findings script shares, and one flag per setting of ``presets``.

    ``--size`` picks a preset (the first is the default); every key of the presets becomes a flag
    (``--hidden_size 128``) whose type follows the first preset's value and which overrides the preset's value
    when given (`resolve_presets`). Shared: ``--seeds``, ``--threads`` (1: the machine is shared), ``--device``
    (``cuda`` for the GPU runs), ``--bf16`` (autocast), ``--out_dir`` (findings) and ``--work_dir`` (caches).
    """
    import argparse

    first = next(iter(presets.values()))
    parser.add_argument("--size", choices=list(presets), default=next(iter(presets)),
                        help="preset of sizes and schedule; any flag below overrides its value")
    for key, value in first.items():
        if key == "bf16":  # the shared --bf16 below reads the preset's value
            continue
        if isinstance(value, bool):
            parser.add_argument(f"--{key}", action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(value, (list, tuple)):
            parser.add_argument(f"--{key}", type=type(value[0]), nargs="+", default=None)
        elif value is None:
            parser.add_argument(f"--{key}", default=None)
        else:
            parser.add_argument(f"--{key}", type=type(value), default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the CPU machine is shared; more threads on busy cores run slower)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast in training (default: the preset's)")
    parser.add_argument("--out_dir", default=str(FINDINGS_DIR), help="where the .md/.json/.png go")
    parser.add_argument("--work_dir", default=str(WORK_DIR), help="tokenizer and window caches")


def resolve_presets(args, presets: dict[str, dict]):
    """Fill every setting left unset on the command line from the chosen preset (``args.size``); returns ``args``."""
    for key, value in presets[args.size].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if getattr(args, "bf16", None) is None:
        args.bf16 = bool(presets[args.size].get("bf16", False))
    torch.set_num_threads(args.threads)
    return args


def command_line(script: str, argv: Sequence[str] | None) -> str:
    import sys
    args = list(argv) if argv is not None else sys.argv[1:]
    return " ".join(["python", script, *args])


# ----- autoencoder runs, spikes and effect tables (F1-F4, F9) ---------------------------------------------------


def train_autoencoder(config, data: Data, schedule: Schedule, seed: int, eval_windows: int | None = None,
                      evaluate: Callable[[torch.nn.Module], dict] | None = None):
    """A `MixerAutoencoder` built from ``config`` after ``torch.manual_seed(seed)``, trained with `train_model`
    (batches seeded by ``seed``) and scored on the first ``eval_windows`` held-out windows; returns
    ``(model, run, autoencoder_scores)`` (the model in eval mode, on ``schedule.device``)."""
    from modeling_memmix import MixerAutoencoder

    torch.manual_seed(seed)
    model = MixerAutoencoder(config).to(schedule.device)
    run = train_model(model, data.train_ids, schedule, seed, evaluate=evaluate)
    return model, run, autoencoder_scores(model, data.val_ids[:eval_windows])


def unigram_baseline(data: Data) -> dict:
    """Scores of a model that ignores its input and predicts the training split's token frequencies (add-one
    smoothed) at every position: held-out CE, accuracy of always guessing the most frequent token, and I_e."""
    counts = torch.bincount(data.train_ids.flatten(), minlength=data.vocab_size).double() + 1
    log_probs = (counts / counts.sum()).log()
    ce = float(-log_probs[data.val_ids.flatten()].mean())
    accuracy = float((data.val_ids == int(counts.argmax())).double().mean())
    return {"ce": ce, "accuracy": accuracy, "information": 1 - ce / math.log(data.vocab_size)}


def count_spikes(values: Sequence[float], factor: float = 5.0, window: int = 50, start: int = 0) -> list[int]:
    """Steps (0-based indices) from ``start`` on whose value exceeds ``factor`` times the median of the ``window``
    values before it (a step needs at least ``window // 5`` earlier values). Non-finite values count as spikes."""
    spikes = []
    for index in range(max(start, 1), len(values)):
        earlier = [v for v in values[max(0, index - window) : index] if math.isfinite(v)]
        if len(earlier) < max(1, window // 5):
            continue
        value = values[index]
        if not math.isfinite(value) or value > factor * statistics.median(earlier):
            spikes.append(index)
    return spikes


def effect_table(effects: dict[str, Sequence[float]], header: str = "per-seed effect (positive = the seed's "
                 "direction)") -> str:
    """One row per effect: label, mean ± std over seeds, and every seed's value."""
    rows = [[label, str(seed_stats(values)), ", ".join(f"{v:+.4g}" for v in values)]
            for label, values in effects.items()]
    return markdown_table([header, "mean ± std", "seeds"], rows)
