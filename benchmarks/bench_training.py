"""Training throughput on this CPU: masked mixer vs transformers' ``LlamaForCausalLM``, and each speed lever on and
off, all in one run.

Both models get the same width, depth, context (``n_ctx``), batch, vocabulary and feed-forward width
(``4 * d``, as the project's own transformer blocks use); each is timed for full training steps (forward with
loss, backward, AdamW step). Every model trains under several *variants*, each a set of levers:

* ``baseline``: what training did before these levers (torch's default CPU AdamW, a per-tensor loop; the loss
  from full ``(tokens, vocabulary)`` logits, cast to fp32);
* ``+foreach`` / ``+fused``: ``torch.optim.AdamW(foreach=True)`` / ``(fused=True)`` (``train.optimizer_impl``);
* ``+chunked``: the LM head and cross-entropy computed together in chunks of tokens, without full-vocabulary
  logits (``return_logits=False``, ``modeling_common.head_and_loss``); Llama gets the same function on its final
  hidden states, so the comparison stays like for like;
* ``tuned``: fused AdamW + chunked loss, the training loop's defaults (``train.optimizer_impl="fused"``,
  ``train.chunked_loss=true``);
* ``compiled``: ``tuned`` with the loss function ``torch.compile``'d (inductor; ``train.compile``), at the
  widths in ``--compile_widths`` (compiling takes minutes on 2 cores).

The variants of one width (both models) share the models' weights, each with its own optimizer, and are timed
in interleaved rounds, each keeping its fastest step (and the matmul its fastest repetition), so load from other
programs on a shared machine biases no variant against another. Lever speedups are ratios within one run.

In the same run a large ``torch.matmul`` measures what this machine's matmul reaches in fp32 and bf16, and model
FLOPs utilization (MFU) is the model's counted FLOPs per second (``torch.utils.flop_counter`` on one forward +
backward: every matmul, the mixer's full ``n_ctx x n_ctx`` product and the attention products included) over
that rate. A second part times kernel ``k > 1`` mixing against flat mixing (d 256, 2 layers, n_ctx 32 / 128 /
512, the same tokens per step) and the mixing op alone in the conv form the model uses against three matmul
forms of the same product. ``torch.profiler`` tables show where a step's time goes, before and after the levers.

Run (about eight minutes on 2 CPU cores, most of it compiling)::

    python benchmarks/bench_training.py                  # writes benchmarks/RESULTS_training.md
    python benchmarks/bench_training.py --widths 256 --depth 2 --rounds 1 --compile_widths --kernel_ctx 32 \\
        --output /tmp/quick.md
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for modeling_memmix

from memmix_train.loop import optimizer_impl_flags  # noqa: E402
from modeling_memmix import MixerConfig, MixerForCausalLM  # noqa: E402
from modeling_memmix.modeling_common import MemmixLMOutput, head_and_loss  # noqa: E402

VOCAB = 8000
HEAD_DIM = 64
MATMUL_SIZE = 2048
MATMUL_OPS = (
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
)
CAST_OPS = ("aten::copy_", "aten::_to_copy")
# what a timed step is measured with: wall time, or (``--clock process``, for 1-thread runs on a shared machine)
# the CPU time of this process, which other programs' load barely changes; see `use_clock`
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter


def use_clock(name: str) -> None:
    """Time steps (and the matmul peak) with ``CLOCKS[name]`` from now on."""
    global clock
    clock = CLOCKS[name]


@dataclass(frozen=True)
class Variant:
    """A set of levers: AdamW implementation, chunked loss, compiled loss function."""

    name: str
    optimizer_impl: str = "for_loop"
    chunked: bool = False
    compiled: bool = False


BASELINE = Variant("baseline")
TUNED = Variant("tuned", "fused", chunked=True)
COMPILED = Variant("compiled", "fused", chunked=True, compiled=True)
LEVERS = (BASELINE, Variant("+foreach", "foreach"), Variant("+fused", "fused"), Variant("+chunked", chunked=True),
          TUNED)


@dataclass
class Setting:
    """One benchmarked shape, shared by both models."""

    width: int
    depth: int
    n_ctx: int
    batch: int
    kernel_size: int = 1

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.n_ctx


@dataclass
class Candidate:
    """A model ready to train in one precision under one variant, and the durations of its timed steps."""

    name: str
    precision: str
    setting: Setting
    variant: Variant
    step: Callable[[], None]
    parameters: int
    flops_per_step: float
    compile_seconds: float | None = None
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
        start = clock()
        left @ right
        best = min(best, clock() - start)
    return 2 * size**3 / best


def update_peaks(peaks: dict[str, float]) -> None:
    """Measure the matmul rate of each precision again and keep the best seen."""
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks[precision] = max(peaks.get(precision, 0.0), matmul_flops_per_second(dtype))


# ----- models -------------------------------------------------------------------------------------------------


def build_mixer(setting: Setting) -> nn.Module:
    config = MixerConfig(vocab_size=VOCAB, hidden_size=setting.width, num_hidden_layers=setting.depth,
                         n_ctx=setting.n_ctx, intermediate_size=4 * setting.width,
                         mixer_kernel_size=setting.kernel_size)
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


def loss_function(name: str, model: nn.Module, chunked: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """``ids -> loss`` of one model (``name`` "llama", or any memmix family): the model's own loss from full
    logits, or the chunked head + loss."""
    if not chunked:
        return lambda ids: model(input_ids=ids, labels=ids).loss
    if name != "llama":
        return lambda ids: model(input_ids=ids, labels=ids, return_logits=False).loss

    def llama_chunked(ids: torch.Tensor) -> torch.Tensor:  # the same head + loss function on Llama's hidden states
        hidden = model.model(input_ids=ids).last_hidden_state
        return head_and_loss(MemmixLMOutput(), hidden, model.lm_head, ids, None, VOCAB, shift=True,
                             return_logits=False).loss

    return llama_chunked


def precision_context(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(name: str, model: nn.Module, batch: torch.Tensor, precision: str,
              variant: Variant) -> tuple[Callable[[], None], float | None]:
    """One training step (forward with loss under autocast for bf16, backward, AdamW, zero grads), and for a
    compiled variant the seconds its first call (the compilation) took."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **optimizer_impl_flags(variant.optimizer_impl))
    compute_loss = loss_function(name, model, variant.chunked)
    if variant.compiled:
        compute_loss = torch.compile(compute_loss, fullgraph=True)

    def step() -> None:
        with precision_context(precision):
            loss = compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    step()  # untimed warmup (allocations, first-call costs, compilation)
    return step, (time.perf_counter() - start if variant.compiled else None)


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
    """FLOPs of one forward + backward pass (full-logits path; the chunked one runs the same three head
    matmuls) as counted by torch's flop counter (matmuls, convolutions and, through `CPU_SDPA_FLOPS`,
    attention; its SDPA backward includes the recomputed scores)."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS)
    with counter:
        model(input_ids=batch, labels=batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def training_batch(setting: Setting) -> torch.Tensor:
    return torch.randint(0, VOCAB, (setting.batch, setting.n_ctx), generator=torch.Generator().manual_seed(0))


def prepare_group(names: tuple[str, ...], setting: Setting, plan: list[tuple[str, Variant]]) -> list[Candidate]:
    """Build each model once (its FLOPs counted once) and one candidate per (precision, variant) of ``plan``."""
    candidates = []
    for name in names:
        torch.manual_seed(0)
        model = BUILDERS[name](setting).train()
        batch = training_batch(setting)
        flops = count_flops(model, batch)
        parameters = sum(parameter.numel() for parameter in model.parameters())
        for precision, variant in plan:
            step, compile_seconds = make_step(name, model, batch, precision, variant)
            candidates.append(Candidate(name, precision, setting, variant, step, parameters, flops, compile_seconds))
            if compile_seconds is not None:
                print(f"compiled {name} d{setting.width} {precision} in {compile_seconds:.0f} s", flush=True)
    return candidates


def time_rounds(candidates: list[Candidate], rounds: int, steps: int, peaks: dict[str, float] | None,
                label: str) -> None:
    """``rounds`` interleaved rounds of ``steps`` timed training steps of every candidate."""
    for index in range(rounds):
        if peaks is not None:
            update_peaks(peaks)
        for candidate in candidates:
            for _ in range(steps):
                start = clock()
                candidate.step()
                candidate.durations.append(clock() - start)
        print(f"{label} round {index + 1}/{rounds}: " + ", ".join(
            f"{c.name} {c.precision} {c.variant.name} {c.durations[-1]:.2f}s" for c in candidates), flush=True)


def release(candidates: list[Candidate]) -> None:
    """Drop models and optimizer state (the timings stay) before the next group is built."""
    for candidate in candidates:
        candidate.step = None
    gc.collect()
    torch._dynamo.reset()


def profile_step(name: str, setting: Setting, precision: str, variant: Variant,
                 rows: int) -> tuple[str, float, float]:
    """``torch.profiler`` table of the top ops (by self CPU time) over two training steps after a warmup step, and
    the shares of self CPU time in matmul ops (mm, addmm, bmm, conv, SDPA) and in dtype copies."""
    torch.manual_seed(0)
    model = BUILDERS[name](setting).train()
    step, _ = make_step(name, model, training_batch(setting), precision, variant)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(2):
            step()
    averages = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in averages)
    matmul = sum(event.self_cpu_time_total for event in averages if event.key in MATMUL_OPS)
    casts = sum(event.self_cpu_time_total for event in averages if event.key in CAST_OPS)
    table = averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)
    return table, matmul / total, casts / total


# ----- the kernel mixing op alone: the conv the model runs against matmul forms of the same product -------------


def conv_form(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """What `MaskedTokenMixing.mix_rows` runs: tokens as channels, convolved along the hidden axis."""
    kernel = weight.shape[-1]
    if kernel % 2 == 0:
        values = F.pad(values, (0, 1))
    return F.conv1d(values, weight, padding=(kernel - 1) // 2)


def shifted_inputs_form(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``y = [W_0 .. W_k-1] @ [shift_0(x); ..; shift_k-1(x)]``: one matmul over k shifted copies of the input."""
    batch, length, channels = values.shape
    kernel = weight.shape[-1]
    padded = F.pad(values, ((kernel - 1) // 2, kernel // 2))
    shifted = torch.stack([padded[..., s : s + channels] for s in range(kernel)], dim=1)  # (B, k, t, c)
    return weight.permute(0, 2, 1).reshape(weight.shape[0], kernel * length) @ shifted.view(batch, -1, channels)


def unfold_form(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``y = W (q, t*k) @ unfold(x) (t*k, c)``: the weight in its stored layout, the input unfolded."""
    batch, length, channels = values.shape
    kernel = weight.shape[-1]
    windows = F.pad(values, ((kernel - 1) // 2, kernel // 2)).unfold(-1, kernel, 1)  # (B, t, c, k)
    return weight.reshape(weight.shape[0], -1) @ windows.transpose(-1, -2).reshape(batch, length * kernel, channels)


def shifted_outputs_form(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``y = sum_s shift_s(W_s @ x)``: one matmul to k outputs, then k shifted adds."""
    batch, length, channels = values.shape
    rows, kernel = weight.shape[0], weight.shape[-1]
    left = (kernel - 1) // 2
    products = (weight.permute(2, 0, 1).reshape(kernel * rows, length) @ values).view(batch, kernel, rows, channels)
    mixed = values.new_zeros(batch, rows, channels, dtype=products.dtype)
    for s in range(kernel):
        low, high = max(0, left - s), min(channels, channels + left - s)
        mixed[..., low:high] += products[:, s, :, low + s - left : high + s - left]
    return mixed


MIXING_FORMS = {"conv1d (the model's)": conv_form, "matmul, shifted inputs": shifted_inputs_form,
                "matmul, unfolded input": unfold_form, "matmul, shifted outputs": shifted_outputs_form}


def mixing_op_rows(n_ctx_values: list[int], kernel: int, width: int, batch_tokens: int, rounds: int) -> list[str]:
    """Forward + backward of the masked k-mixing op alone under bf16 autocast, each form against the conv."""
    lines = ["| n_ctx | k | form | ms (fwd+bwd) | vs conv1d | max abs diff vs conv1d |", "|---|---|---|---|---|---|"]
    for n_ctx in n_ctx_values:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(n_ctx, n_ctx, kernel, generator=generator) / (n_ctx * kernel) ** 0.5
        mask = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool))[..., None]
        values = torch.randn(max(1, batch_tokens // n_ctx), n_ctx, width, generator=generator)
        best, outputs = {}, {}
        for _ in range(rounds + 1):
            for form_name, form in MIXING_FORMS.items():
                w, x = weight.clone().requires_grad_(), values.clone().requires_grad_()
                start = clock()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = form(x, w * mask)
                out.float().sum().backward()
                best[form_name] = min(best.get(form_name, float("inf")), clock() - start)
                outputs[form_name] = out.float().detach()
        conv_name = next(iter(MIXING_FORMS))
        for form_name in MIXING_FORMS:
            difference = float((outputs[form_name] - outputs[conv_name]).abs().max())
            lines.append(f"| {n_ctx} | {kernel} | {form_name} | {1e3 * best[form_name]:.1f} "
                         f"| {best[form_name] / best[conv_name]:.2f}x | {difference:.1e} |")
    return lines


# ----- report -------------------------------------------------------------------------------------------------


def mfu(candidate: Candidate, peaks: dict[str, float], precision: str | None = None) -> str:
    return f"{100 * candidate.flops_per_second / peaks[precision or candidate.precision]:.0f} %"


def headline_table(candidates: list[Candidate], peaks: dict[str, float]) -> str:
    """Mixer vs Llama per width and precision, before (baseline) and after (tuned / compiled) the levers."""
    lines = [
        "| d | depth | n_ctx | batch | precision | variant | model | params (M) | s/step | tokens/s "
        "| mixer/llama tokens/s | GFLOP/step | llama/mixer FLOPs | GFLOP/s | MFU (same-precision matmul) "
        "| MFU (bf16 matmul) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    key = {(c.name, c.precision, c.variant.name, c.setting.width): c for c in candidates}
    for c in candidates:
        if c.variant not in (BASELINE, TUNED, COMPILED):
            continue
        llama = key.get(("llama", c.precision, c.variant.name, c.setting.width))
        is_mixer = c.name == "mixer" and llama is not None
        speed_ratio = f"**{c.tokens_per_second / llama.tokens_per_second:.2f}x**" if is_mixer else ""
        flop_ratio = f"{llama.flops_per_step / c.flops_per_step:.2f}x" if is_mixer else ""
        s = c.setting
        lines.append(
            f"| {s.width} | {s.depth} | {s.n_ctx} | {s.batch} | {c.precision} | {c.variant.name} | {c.name} "
            f"| {c.parameters / 1e6:.1f} | {c.seconds_per_step:.3f} | {c.tokens_per_second:,.0f} | {speed_ratio} "
            f"| {c.flops_per_step / 1e9:.1f} | {flop_ratio} | {c.flops_per_second / 1e9:.1f} | {mfu(c, peaks)} "
            f"| {mfu(c, peaks, 'bf16')} |"
        )
    return "\n".join(lines)


def lever_table(candidates: list[Candidate]) -> str:
    """Each variant's step time as a speedup over the baseline of the same model, width and precision."""
    lines = ["| d | model | precision | variant | s/step | speedup over baseline | compile (s) |",
             "|---|---|---|---|---|---|---|"]
    baseline = {(c.name, c.precision, c.setting.width): c for c in candidates if c.variant == BASELINE}
    for c in candidates:
        base = baseline[(c.name, c.precision, c.setting.width)]
        compile_time = f"{c.compile_seconds:.0f}" if c.compile_seconds is not None else ""
        lines.append(f"| {c.setting.width} | {c.name} | {c.precision} | {c.variant.name} | {c.seconds_per_step:.3f} "
                     f"| {base.seconds_per_step / c.seconds_per_step:.2f}x | {compile_time} |")
    return "\n".join(lines)


def kernel_table(candidates: list[Candidate]) -> str:
    """Kernel k > 1 mixers against the flat mixer of the same n_ctx and precision."""
    lines = ["| n_ctx | batch | precision | k | s/step | tokens/s | step time / flat's | GFLOP/step |",
             "|---|---|---|---|---|---|---|---|"]
    flat = {(c.setting.n_ctx, c.precision): c for c in candidates if c.setting.kernel_size == 1}
    for c in candidates:
        base = flat[(c.setting.n_ctx, c.precision)]
        lines.append(f"| {c.setting.n_ctx} | {c.setting.batch} | {c.precision} | {c.setting.kernel_size} "
                     f"| {c.seconds_per_step:.4f} | {c.tokens_per_second:,.0f} "
                     f"| {c.seconds_per_step / base.seconds_per_step:.2f}x | {c.flops_per_step / 1e9:.2f} |")
    return "\n".join(lines)


def write_report(path: Path, args, main_candidates: list[Candidate], kernel_candidates: list[Candidate],
                 mixing_lines: list[str], peaks: dict[str, float], profiles: dict[str, tuple[str, float, float]],
                 run_notes: dict[str, str]) -> None:
    text = [
        "# Training throughput: masked mixer vs LlamaForCausalLM, and the speed levers",
        "",
        f"Written by `{run_notes['command']}` in {run_notes['elapsed']}. Machine: {run_notes['machine']}.",
        f"Load average (1 min) before / after the run: {run_notes['load']} — this machine may be shared; "
        "every number is the best of interleaved rounds, and speedups are ratios within this run.",
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
        "Variants: `baseline` = torch's default CPU AdamW (for-loop) and the loss from full fp32 logits (training "
        "before these levers); `+foreach`, `+fused` = that AdamW implementation; `+chunked` = LM head + "
        "cross-entropy in chunks of tokens without full-vocabulary logits (Llama gets the same function on its "
        "hidden states); `tuned` = fused + chunked (the training loop's defaults); `compiled` = tuned with the "
        "loss function compiled by `torch.compile(fullgraph=True)` (inductor).",
        "",
        "## Mixer vs Llama",
        "",
        headline_table(main_candidates, peaks),
        "",
        "## Each lever on and off (same run, same weights)",
        "",
        lever_table(main_candidates),
        "",
    ]
    if kernel_candidates:
        text += [
            f"## Kernel k > 1 mixing against flat mixing (d {args.kernel_width}, {args.kernel_depth} layers, "
            f"{args.kernel_tokens} tokens per step, tuned variant)",
            "",
            "Kernel mixing is a `Conv1d(n_ctx, n_ctx, k)` along the hidden axis with tokens as channels: k times "
            "the flat mixer's mixing FLOPs (the counted GFLOP/step column).",
            "",
            kernel_table(kernel_candidates),
            "",
        ]
    if mixing_lines:
        text += [
            f"### The k-mixing op alone: conv1d against matmul forms (bf16 autocast, forward + backward, d "
            f"{args.kernel_width}, {args.kernel_tokens} tokens)",
            "",
            "The same masked product written as one matmul (over k shifted or unfolded copies of the input, or to "
            "k outputs added with shifts). The differences are bf16 rounding.",
            "",
            *mixing_lines,
            "",
        ]
    for title, (table, matmul_share, cast_share) in profiles.items():
        text += [f"## Profile: {title}", "",
                 f"Share of self CPU time in matmul ops (mm, addmm, bmm, conv, SDPA): {100 * matmul_share:.0f} %; "
                 f"in dtype copies (copy_, _to_copy): {100 * cast_share:.0f} %.", "",
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
    parser.add_argument("--compile_widths", type=int, nargs="*", default=[256],
                        help="widths that also time the compiled variant (none: pass the flag alone)")
    parser.add_argument("--kernel_ctx", type=int, nargs="*", default=[32, 128, 512],
                        help="n_ctx values of the kernel-mixing comparison (none: pass the flag alone)")
    parser.add_argument("--kernel_sizes", type=int, nargs="+", default=[1, 3, 8])
    parser.add_argument("--kernel_width", type=int, default=256)
    parser.add_argument("--kernel_depth", type=int, default=2)
    parser.add_argument("--kernel_tokens", type=int, default=2048, help="tokens per step (batch = tokens / n_ctx)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="time steps by wall time, or by this process's CPU time (with --threads 1 on a shared "
                             "machine: other programs' load then barely changes the numbers)")
    parser.add_argument("--profile_rows", type=int, default=15)
    parser.add_argument("--no_profile", action="store_true")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS_training.md"))
    args = parser.parse_args(argv)
    for name in ("depth", "n_ctx", "batch", "rounds", "steps_per_round", "kernel_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name}={getattr(args, name)} must be at least 1")
    for n_ctx in args.kernel_ctx:
        if args.kernel_tokens % n_ctx:
            raise ValueError(f"--kernel_tokens={args.kernel_tokens} must be a multiple of each --kernel_ctx ({n_ctx})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "process" and torch.get_num_threads() != 1:
        raise ValueError("--clock process sums the CPU time of all threads; use it with --threads 1")
    use_clock(args.clock)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    peaks: dict[str, float] = {}
    main_candidates: list[Candidate] = []
    for width in args.widths:
        setting = Setting(width, args.depth, args.n_ctx, args.batch)
        plan = [("fp32", BASELINE), ("fp32", TUNED)] + [("bf16", variant) for variant in LEVERS]
        if width in args.compile_widths:
            plan.append(("bf16", COMPILED))
        group = prepare_group(tuple(BUILDERS), setting, plan)
        time_rounds(group, args.rounds, args.steps_per_round, peaks, f"d{width}")
        release(group)
        main_candidates += group
    kernel_candidates: list[Candidate] = []
    for n_ctx in args.kernel_ctx:
        group = []
        for kernel_size in args.kernel_sizes:
            setting = Setting(args.kernel_width, args.kernel_depth, n_ctx, args.kernel_tokens // n_ctx, kernel_size)
            group += prepare_group(("mixer",), setting, [("fp32", TUNED), ("bf16", TUNED)])
        time_rounds(group, args.rounds, args.steps_per_round, None, f"kernels n_ctx {n_ctx}")
        release(group)
        kernel_candidates += group
    mixing_lines = []
    if args.kernel_ctx and max(args.kernel_sizes) > 1:
        mixing_lines = mixing_op_rows([n for n in args.kernel_ctx if n >= 128] or args.kernel_ctx,
                                      max(args.kernel_sizes), args.kernel_width, args.kernel_tokens, args.rounds)
    profiles = {}
    if not args.no_profile:
        setting = Setting(args.widths[0], args.depth, args.n_ctx, args.batch)
        for name, variant in (("mixer", BASELINE), ("mixer", TUNED), ("llama", TUNED)):
            title = (f"{name}, {variant.name}, bf16 autocast, d {setting.width}, two training steps, "
                     "top ops by self CPU time")
            profiles[title] = profile_step(name, setting, "bf16", variant, args.profile_rows)
    command = "python benchmarks/bench_training.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_notes = {
        "command": command.strip(),
        "elapsed": f"{time.perf_counter() - started:.0f} s",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; steps timed by "
                   + ("wall time" if args.clock == "wall" else "this process's CPU time (`--clock process`)"),
        "load": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
    }
    write_report(args.output, args, main_candidates, kernel_candidates, mixing_lines, peaks, profiles, run_notes)
    print(headline_table(main_candidates, peaks))
    print(lever_table(main_candidates))
    if kernel_candidates:
        print(kernel_table(kernel_candidates))
    print("\n".join(mixing_lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    main()
