"""Training throughput on this CPU: masked mixer vs transformers' ``LlamaForCausalLM``, in one run.

Both models get the same width, depth, context (``n_ctx``), batch, vocabulary and feed-forward width
(``4 * d``, as the project's own transformer blocks use); each is timed for full training steps (forward with
loss, backward, AdamW step) in fp32 and under bf16 autocast. In the same run a large ``torch.matmul``
measures what this machine's matmul reaches in fp32 and bf16, and model FLOPs utilization (MFU) is the model's
counted FLOPs per second (``torch.utils.flop_counter`` on one forward + backward: every matmul, the mixer's
full ``n_ctx x n_ctx`` product and the attention products included) over that rate. A ``torch.profiler``
table of the top ops shows where a step's time goes. Results go to a Markdown file.

The models are timed in interleaved rounds and each keeps its fastest step (and the matmul its fastest
repetition), so load from other programs on a shared machine biases no model against another.

Run (a few minutes on 2 CPU cores)::

    python benchmarks/bench_training.py                  # writes benchmarks/RESULTS_training.md
    python benchmarks/bench_training.py --widths 256 --depth 2 --rounds 1 --output /tmp/quick.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for modeling_memmix

from modeling_memmix import MixerConfig, MixerForCausalLM  # noqa: E402

VOCAB = 8000
HEAD_DIM = 64
PRECISIONS = ("fp32", "bf16")
MATMUL_SIZE = 2048
MATMUL_OPS = (
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
)


@dataclass
class Setting:
    """One benchmarked shape, shared by both models."""

    width: int
    depth: int
    n_ctx: int
    batch: int

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.n_ctx


@dataclass
class Candidate:
    """A model ready to train in one precision, and the durations of its timed steps."""

    name: str
    precision: str
    setting: Setting
    step: Callable[[], None]
    parameters: int
    flops_per_step: float
    durations: list[float] = field(default_factory=list)

    @property
    def seconds_per_step(self) -> float:
        return min(self.durations)

    @property
    def tokens_per_second(self) -> float:
        return self.setting.tokens_per_step / self.seconds_per_step

    @property
    def flops_per_second(self) -> float:
        return self.flops_per_step / self.seconds_per_step


# ----- machine ------------------------------------------------------------------------------------------------


def matmul_flops_per_second(dtype: torch.dtype, size: int = MATMUL_SIZE, seconds: float = 1.5) -> float:
    """FLOP/s of the fastest repetition of a square ``size`` matmul in ``dtype`` within ``seconds``."""
    left, right = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        left @ right
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        left @ right
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def update_peaks(peaks: dict[str, float]) -> None:
    """Measure the matmul rate of each precision again and keep the best seen."""
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks[precision] = max(peaks.get(precision, 0.0), matmul_flops_per_second(dtype))


# ----- models -------------------------------------------------------------------------------------------------


def build_mixer(setting: Setting) -> nn.Module:
    config = MixerConfig(vocab_size=VOCAB, hidden_size=setting.width, num_hidden_layers=setting.depth,
                         n_ctx=setting.n_ctx, intermediate_size=4 * setting.width)
    return MixerForCausalLM(config)


def build_llama(setting: Setting) -> nn.Module:
    if setting.width % HEAD_DIM:
        raise ValueError(f"width={setting.width} must be a multiple of the Llama head size {HEAD_DIM}")
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=setting.width, intermediate_size=4 * setting.width,
                         num_hidden_layers=setting.depth, num_attention_heads=setting.width // HEAD_DIM,
                         max_position_embeddings=setting.n_ctx, tie_word_embeddings=False,
                         attn_implementation="sdpa", use_cache=False)
    return LlamaForCausalLM(config)


BUILDERS: dict[str, Callable[[Setting], nn.Module]] = {"mixer": build_mixer, "llama": build_llama}


def precision_context(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(model: nn.Module, batch: torch.Tensor, precision: str) -> Callable[[], None]:
    """One training step: forward with loss (under autocast for bf16), backward, AdamW, zero grads."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with precision_context(precision):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch's own SDPA formula (full, not causal-halved, product) for the CPU kernel it does not register."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def cpu_flash_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                                       out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch 2.13's flop counter knows the CUDA SDPA kernels but not the CPU one, which Llama's attention runs on
# here; without these entries Llama's attention products would count as zero FLOPs.
CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_flash_attention_backward_flops,
}


def count_flops(model: nn.Module, batch: torch.Tensor) -> float:
    """FLOPs of one forward + backward pass as counted by torch's flop counter (matmuls, convolutions and,
    through `CPU_SDPA_FLOPS`, attention; its SDPA backward includes the recomputed scores)."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS)
    with counter:
        model(input_ids=batch, labels=batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def training_batch(setting: Setting) -> torch.Tensor:
    return torch.randint(0, VOCAB, (setting.batch, setting.n_ctx), generator=torch.Generator().manual_seed(0))


def prepare(name: str, setting: Setting, precision: str) -> Candidate:
    """Build the model, count its FLOPs and run one untimed warmup step (allocations, first-call costs)."""
    torch.manual_seed(0)
    model = BUILDERS[name](setting).train()
    batch = training_batch(setting)
    flops = count_flops(model, batch)
    step = make_step(model, batch, precision)
    step()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    return Candidate(name, precision, setting, step, parameters, flops)


def time_round(candidates: list[Candidate], steps: int) -> None:
    """Time ``steps`` training steps of every candidate, one candidate after another."""
    for candidate in candidates:
        for _ in range(steps):
            start = time.perf_counter()
            candidate.step()
            candidate.durations.append(time.perf_counter() - start)


def profile_step(name: str, setting: Setting, precision: str, rows: int) -> tuple[str, float]:
    """``torch.profiler`` table of the top ops (by self CPU time) over two training steps after a warmup step,
    and the share of self CPU time spent in matmul ops (mm, addmm, bmm, SDPA)."""
    torch.manual_seed(0)
    model = BUILDERS[name](setting).train()
    step = make_step(model, training_batch(setting), precision)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(2):
            step()
    averages = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in averages)
    matmul = sum(event.self_cpu_time_total for event in averages if event.key in MATMUL_OPS)
    table = averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)
    return table, matmul / total


# ----- report -------------------------------------------------------------------------------------------------


def results_table(candidates: list[Candidate], peaks: dict[str, float]) -> str:
    lines = [
        "| d | depth | n_ctx | batch | model | precision | params (M) | s/step | tokens/s | mixer/llama tokens/s "
        "| GFLOP/step | llama/mixer FLOPs | GFLOP/s | MFU (same-precision matmul) | MFU (bf16 matmul) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(c.name, c.precision, c.setting.width): c for c in candidates}
    for c in candidates:
        llama = by_key.get(("llama", c.precision, c.setting.width))
        is_mixer = c.name == "mixer" and llama is not None
        speed_ratio = f"{c.tokens_per_second / llama.tokens_per_second:.2f}x" if is_mixer else ""
        flop_ratio = f"{llama.flops_per_step / c.flops_per_step:.2f}x" if is_mixer else ""
        s = c.setting
        lines.append(
            f"| {s.width} | {s.depth} | {s.n_ctx} | {s.batch} | {c.name} | {c.precision} "
            f"| {c.parameters / 1e6:.1f} | {c.seconds_per_step:.3f} | {c.tokens_per_second:,.0f} | {speed_ratio} "
            f"| {c.flops_per_step / 1e9:.1f} | {flop_ratio} | {c.flops_per_second / 1e9:.1f} "
            f"| {100 * c.flops_per_second / peaks[c.precision]:.0f} % "
            f"| {100 * c.flops_per_second / peaks['bf16']:.0f} % |"
        )
    return "\n".join(lines)


def write_report(path: Path, candidates: list[Candidate], peaks: dict[str, float],
                 profiles: dict[str, tuple[str, float]], run_notes: dict[str, str]) -> None:
    text = [
        "# Training throughput: masked mixer vs LlamaForCausalLM",
        "",
        f"Written by `{run_notes['command']}` in {run_notes['elapsed']}. Machine: {run_notes['machine']}.",
        f"Load average (1 min) before / after the run: {run_notes['load']} — this machine may be shared; "
        "every number is the best of interleaved rounds.",
        "",
        f"Measured matmul throughput ({MATMUL_SIZE} x {MATMUL_SIZE}, fastest repetition): "
        f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s.",
        "",
        "Tokens/s count full training steps (forward with loss, backward, AdamW). FLOPs are counted by "
        "`torch.utils.flop_counter` on one forward + backward (the mixer's full, masked `n_ctx x n_ctx` matmul "
        "and Llama's attention products included, the latter with torch's SDPA formulas, whose backward counts "
        "the recomputed scores; the optimizer step not). `llama/mixer FLOPs` is the ratio "
        "of counted FLOPs per step, the speedup the mixer would have at equal efficiency. Both models use "
        f"vocabulary {VOCAB}, untied embeddings, feed-forward width 4d (Llama's is gated: 1.5x the "
        f"feed-forward weights of the mixer's), Llama head size {HEAD_DIM} with SDPA attention.",
        "",
        results_table(candidates, peaks),
        "",
    ]
    for title, (table, matmul_share) in profiles.items():
        text += [f"## Profile: {title}", "",
                 f"Share of self CPU time in matmul ops (mm, addmm, bmm, SDPA): {100 * matmul_share:.0f} %.", "",
                 "```", table.rstrip(), "```", ""]
    path.write_text("\n".join(text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--n_ctx", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    parser.add_argument("--steps_per_round", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--profile_rows", type=int, default=15)
    parser.add_argument("--no_profile", action="store_true")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS_training.md"))
    args = parser.parse_args(argv)
    for name in ("depth", "n_ctx", "batch", "rounds", "steps_per_round"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name}={getattr(args, name)} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    peaks: dict[str, float] = {}
    candidates = [prepare(name, Setting(width, args.depth, args.n_ctx, args.batch), precision)
                  for width in args.widths for precision in PRECISIONS for name in BUILDERS]
    for index in range(args.rounds):
        update_peaks(peaks)
        time_round(candidates, args.steps_per_round)
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(
            f"{c.name} d{c.setting.width} {c.precision} {c.durations[-1]:.2f}s" for c in candidates), flush=True)
    profiles = {}
    if not args.no_profile:
        setting = Setting(args.widths[0], args.depth, args.n_ctx, args.batch)
        for name in BUILDERS:
            title = f"{name}, bf16 autocast, d {setting.width}, two training steps, top ops by self CPU time"
            profiles[title] = profile_step(name, setting, "bf16", args.profile_rows)
    command = "python benchmarks/bench_training.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_notes = {
        "command": command.strip(),
        "elapsed": f"{time.perf_counter() - started:.0f} s",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "load": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
    }
    write_report(args.output, candidates, peaks, profiles, run_notes)
    print(results_table(candidates, peaks))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
